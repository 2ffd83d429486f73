"""The risk model and the readable reference implementation of every pre-trade check.

This package is the specification in code: ``cext`` must decide exactly as ``checks.engine``
does, and nothing here does I/O.
"""
