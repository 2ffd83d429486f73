"""``fengkong report daily --date D [--journal DIR] [--out DIR] [--config FILE]``.

Writes the day's CSV tables (``gateway.compliance.report``) and, when matplotlib (the ``report``
extra) is installed, the HTML report with charts; without it, it says so in one line and the CSV
is still written. Exit codes: 0 written, 1 written but the journal was damaged (the figures stop
at the damage, which the output names), 2 nothing written (bad arguments, no journal, bad
config).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from checks.config import ConfigError
from gateway.compliance.report import ReportError, build, parse_date
from gateway.compliance.report_csv import write_csv
from gateway.config import load_gateway_config
from gateway.journal import JournalError

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent.parent / "examples" / "gateway.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fengkong report",
                                     description="Surveillance reports from the audit journal.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("daily", help="one trading day's surveillance report (CSV + HTML)")
    p.add_argument("--date", required=True, help="the trading day, YYYY-MM-DD")
    p.add_argument("--config", default=str(DEFAULT_CONFIG),
                   help="the gateway's config (limits, users, exchanges); default: the sample")
    p.add_argument("--journal", help="journal directory (default: the config's [journal].dir)")
    p.add_argument("--out", default=".", help="directory for the report files (default: .)")
    p.add_argument("--no-html", action="store_true", help="CSV only")
    args = parser.parse_args(argv)
    err = sys.stderr
    try:
        day = parse_date(args.date)
        if Path(args.config).resolve() == DEFAULT_CONFIG:
            print(f"fengkong report: limits, users and exchanges from the sample configuration "
                  f"{DEFAULT_CONFIG}; pass --config with your gateway's", file=err)
        cfg = load_gateway_config(args.config)
        journal = args.journal or cfg.journal.dir
        if not journal:
            raise ReportError("no journal: pass --journal DIR or set [journal].dir in the config")
        report = build(cfg, journal, day)
        paths = write_csv(report, args.out)
    except ConfigError as e:
        print(f"fengkong report: config error: {e}", file=err)
        return 2
    except (ReportError, JournalError, OSError) as e:
        print(f"fengkong report: {e}", file=err)
        return 2
    for path in paths:
        print(f"wrote {path}")
    if not args.no_html:
        from gateway.compliance.report_html import charts_available, to_html

        html_path = Path(args.out) / f"daily-{report.trading_day.replace('-', '')}.html"
        if charts_available():
            html_path.write_text(to_html(report), encoding="utf-8")
            print(f"wrote {html_path}")
        else:
            print("fengkong report: matplotlib is not installed, so no HTML report was drawn "
                  "(install the report extra: pip install 'fengkong[report]'); the CSV is "
                  "written", file=err)
    if report.damage:
        print(f"fengkong report: the journal is damaged; figures stop at {report.damage}",
              file=err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
