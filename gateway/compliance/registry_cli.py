"""``fengkong registry``: the programmatic-trading registry from a risk officer's shell.

::

    fengkong registry list                                   every account's report state
    fengkong registry show A001 [--json]                     one account, console JSON
    fengkong registry draft A001 --file report.json --reason "new client"
    fengkong registry submit A001 --reason "sent to SHFE"
    fengkong registry confirm A001 --exchange-ref SHFE-2026-0012 --reason "exchange feedback"
    fengkong registry return A001 --reason "exchange asked for the test report"
    fengkong registry change A001 [--file report.json] --reason "new version of the software"
    fengkong registry export --exchange SHFE --format csv [--which in_force] [--out FILE]

Every command goes through the admin plane (``--admin``, ``--token`` or ``$FENGKONG_ADMIN``,
``$FENGKONG_TOKEN``), which journals each step with the operator. A refusal prints one line
(the admin plane's reason, e.g. the field that is wrong or the steps the state allows) and
exits 1; a usage mistake exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from gateway.admin_client import AdminCallError, admin_call

STEPS = ("draft", "submit", "confirm", "return", "change")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fengkong registry",
                                description="The programmatic-trading registry (art. 10 reports).")
    p.add_argument("--admin", default=os.environ.get("FENGKONG_ADMIN", "http://127.0.0.1:9300"),
                   help="admin plane URL (default $FENGKONG_ADMIN or http://127.0.0.1:9300)")
    p.add_argument("--token", default=os.environ.get("FENGKONG_TOKEN", ""),
                   help="operator token (default $FENGKONG_TOKEN)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("list", help="every account's report state")
    s = sub.add_parser("show", help="one account's report, figures enforced and history")
    s.add_argument("account")
    s.add_argument("--json", action="store_true", help="the console JSON as it is")
    for name in STEPS:
        s = sub.add_parser(name, help=f"{name} the account's report")
        s.add_argument("account")
        s.add_argument("--reason", default="", help="why (journaled)")
        s.add_argument("--emergency", action="store_true",
                       help="loosening while a session is open (change control, art. 15)")
        if name in ("draft", "change"):
            s.add_argument("--file", required=name == "draft",
                           help="the report as JSON (README: 'Programmatic-trading registry')")
        if name == "confirm":
            s.add_argument("--exchange-ref", required=True,
                           help="the exchange's reference in its confirmation")
    s = sub.add_parser("export", help="the reports of one exchange as CSV or JSON")
    s.add_argument("--exchange", required=True)
    s.add_argument("--format", choices=("csv", "json"), default="csv")
    s.add_argument("--which", choices=("current", "in_force"), default="current")
    s.add_argument("--out", help="write to this file instead of stdout")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except AdminCallError as err:
        print(f"fengkong registry {args.command}: {err}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as err:
        print(f"fengkong registry {args.command}: {err}", file=sys.stderr)
        return 2


def _call(args: argparse.Namespace, method: str, path: str, body: dict | None = None) -> Any:
    return admin_call(args.admin, args.token, method, path, body)


def _run(args: argparse.Namespace) -> int:
    if args.command == "list":
        for v in _call(args, "GET", "/v1/registry"):
            c = v["correction"]
            hft = v["enforced"]["hft"]
            figures = f"HFT {hft['max_per_sec']}/s {hft['max_per_day']}/day" if hft else ""
            flag = ("NEEDS CORRECTION" + (" (close-only)" if c["close_only"] else "")) if c else ""
            print(f"{v['account']:<10} {v['state'] or '-':<15} v{v['version']:<3} "
                  f"{v['enforced']['programmatic']:<10} {figures:<24}{flag}")
        return 0
    if args.command == "show":
        v = _call(args, "GET", f"/v1/registry/{quote(args.account, safe='')}")
        if args.json:
            print(json.dumps(v, ensure_ascii=False, indent=2))
        else:
            _show(v)
        return 0
    if args.command == "export":
        query = urlencode({"exchange": args.exchange, "format": "json", "which": args.which})
        data = _call(args, "GET", f"/v1/registry/export?{query}")
        if args.format == "csv":
            from gateway.compliance.registry import export_csv

            text = export_csv(data["reports"])
        else:
            text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
        if args.out:
            Path(args.out).write_text(text, encoding="utf-8")
            print(f"{len(data['reports'])} reports for {args.exchange} written to {args.out}")
        else:
            sys.stdout.write(text)
        return 0
    body: dict[str, Any] = {"reason": args.reason, "emergency": args.emergency}
    if getattr(args, "file", None):
        try:
            body["report"] = json.loads(Path(args.file).read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"{args.file}: not JSON: {err}") from None
    if args.command == "confirm":
        body["exchange_ref"] = args.exchange_ref
    v = _call(args, "POST", f"/v1/registry/{quote(args.account, safe='')}/{args.command}", body)
    print(f"{args.account}: report {v['state']} (version {v['version']}, confirmed "
          f"{v['confirmed_version']})" + (f"; loosened: {v['looser']}" if v.get("looser") else ""))
    return 0


def _show(v: dict[str, Any]) -> None:
    print(f"account {v['account']}: {v['label']['en']} / {v['label']['zh']}")
    print(f"  version {v['version']}, confirmed version {v['confirmed_version']}"
          + (f", exchange ref {v['exchange_ref']}" if v["exchange_ref"] else ""))
    e = v["enforced"]
    hft = e["hft"]
    print(f"  enforced: registration {e['programmatic']}, status {e['status']}, "
          + (f"HFT {hft['max_per_sec']}/s and {hft['max_per_day']}/day" if hft else "no HFT"))
    if v["correction"]:
        c = v["correction"]
        print(f"  NEEDS CORRECTION: {c['detail']}"
              + (" — close-only" if c["close_only"] else
                 f" (close-only at {c['deadline']}, {c.get('seconds_left')} s left)"))
    print(f"  allowed steps: {', '.join(v['allowed']) or 'none'}")
    for t in v["history"]:
        print(f"  {t['time']} {t['step']:<8} {t['from_state'] or '-'} -> {t['to_state']} "
              f"v{t['version']} by {t['operator']}: {t['reason']}")
