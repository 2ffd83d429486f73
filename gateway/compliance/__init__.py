"""Compliance a broker hands to the exchange (issue 14), built on the journal and the engines.

- ``registry``: the programmatic-trading registry — each account's art. 10 report, its
  lifecycle (DRAFT -> SUBMITTED -> CONFIRMED -> CHANGE_PENDING), the figures the live checks
  enforce, reports that need correction and the close-only that follows (art. 11); the admin
  routes (``registry_admin``), the command line (``registry_cli``) and the watch on behaviour
  that no longer matches a report (``conformance``).
- ``report``: the daily surveillance report, rebuilt from the journal for any past day.
- ``certify``: client certification with a tamper-evident, twenty-year record (art. 16).
"""
