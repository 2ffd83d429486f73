"""The programmatic-trading registry (程序化交易报告管理): each account's art. 10 report.

Theory of operation
-------------------
A futures company reports each programmatic client to the exchange (programmatic-trading
rules art. 8-12): who trades (trader, trading codes, futures company, product manager), with
what (how orders are executed, the software, its version, functions and developer) and, for a
high-frequency trader, the strategy type, the maximum order + cancel frequency per second and
per day it will not exceed, where its servers are, its test report, emergency plan and risk
measures. The registry holds one report per account and moves it through a small lifecycle,
asked as a table *before* anything changes (``TABLE``)::

    (none) --draft--> DRAFT --submit--> SUBMITTED --confirm--> CONFIRMED --change--> CHANGE_PENDING
                      DRAFT --draft--> DRAFT             (edit the draft)
                  SUBMITTED --return--> DRAFT            (the exchange sent it back; never confirmed)
                  SUBMITTED --return--> CHANGE_PENDING   (sent back; a confirmed version is in force)
             CHANGE_PENDING --draft--> CHANGE_PENDING    (edit the change)
             CHANGE_PENDING --submit--> SUBMITTED --confirm--> CONFIRMED (the new version in force)

Anything else is refused with an error naming the state and the steps it allows. The version
*in force* is the one last confirmed: a change being prepared or awaiting the exchange does not
replace it, so the live checks keep enforcing what the exchange confirmed.

What the live checks take from it (DESIGN.md §4.8): at ``submit`` an unregistered account
becomes REPORTED; at ``confirm`` it becomes CONFIRMED and the HFT section of the confirmed
version is its HFT registration — the reported per-second and per-day order + cancel maxima
are the limits both engines enforce (``Engine.set_hft``; a confirmed report without an HFT
section unregisters it). A report needs *correction* when the account's trading no longer
matches it (``gateway.compliance.conformance`` watches; art. 11): the registry journals the
finding, raises alert ``REPORT_NEEDS_CORRECTION`` (1314) for the account, and if no corrected
report is submitted within ``[compliance].correction_grace_s`` the account goes CLOSE_ONLY
through the kill switch's account-status path (a person puts it back). Submitting a report
clears the finding.

Journal and replay: every step is an ``AdminAction`` (``registry_<step>``, operator, reason,
emergency flag, the report as given) written through ``KillSwitch.audit`` before it takes
effect, and ``apply`` is the one function that changes the registry, live and on replay
(``gateway.recovery``). A trading-day checkpoint carries the whole registry
(``encode``/``restore``), so a restart from a checkpoint rebuilds it exactly.
"""

from __future__ import annotations

import csv
import io
import math
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import msgspec
import structlog

from checks.engine import MAX_HFT_PER_DAY, MAX_HFT_PER_SEC
from checks.enums import AccountStatus, AlertLevel, KillScope, ProgReg
from checks.reasons import Reason
from gateway.journal import CHINA_TZ

if TYPE_CHECKING:
    from gateway.killswitch import KillSwitch

log = structlog.get_logger("fengkong.registry")

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
LongText = Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
OptText = Annotated[str, msgspec.Meta(max_length=200)]
Code = Annotated[str, msgspec.Meta(min_length=1, max_length=32)]
HISTORY_KEPT = 100  # transitions kept per account in the registry (the journal keeps them all)


class AccountBasics(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """Who trades: art. 10 (1)."""

    trader_name: Text  # the client (natural person or institution)
    # exchange -> trading code (交易编码); a client has one per exchange, so a few at most
    trading_codes: Annotated[dict[Code, Code], msgspec.Meta(max_length=16)]
    futures_company: Text
    product_manager: OptText = ""  # for an asset-management product: its manager


class TradingSoftware(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """With what: art. 10 (2)."""

    execution_method: Text  # how orders are generated and sent (e.g. "fully automated")
    software_name: Text
    software_version: Text
    basic_functions: LongText
    developer: Text


class HftReport(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    """A high-frequency trader's additional information: art. 10 (3)."""

    strategy_type: Text
    max_per_sec: Annotated[int, msgspec.Meta(ge=1, le=MAX_HFT_PER_SEC)]  # orders + cancels
    max_per_day: Annotated[int, msgspec.Meta(ge=1, le=MAX_HFT_PER_DAY)]
    server_location: Text
    test_report: Text  # reference of the system test report
    emergency_plan: LongText
    risk_measures: LongText


class Report(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    basics: AccountBasics
    software: TradingSoftware
    hft: HftReport | None = None


class State(StrEnum):
    DRAFT = "DRAFT"
    SUBMITTED = "SUBMITTED"
    CONFIRMED = "CONFIRMED"
    CHANGE_PENDING = "CHANGE_PENDING"


STEPS = ("draft", "submit", "confirm", "return", "change")
# (state, step) -> new state. ``None`` is "no report yet". A report that was confirmed once and
# is returned goes back to CHANGE_PENDING instead of DRAFT (``target``).
TABLE: dict[tuple[State | None, str], State] = {
    (None, "draft"): State.DRAFT,
    (State.DRAFT, "draft"): State.DRAFT,
    (State.DRAFT, "submit"): State.SUBMITTED,
    (State.SUBMITTED, "confirm"): State.CONFIRMED,
    (State.SUBMITTED, "return"): State.DRAFT,
    (State.CONFIRMED, "change"): State.CHANGE_PENDING,
    (State.CHANGE_PENDING, "draft"): State.CHANGE_PENDING,
    (State.CHANGE_PENDING, "submit"): State.SUBMITTED,
}
LABELS = {  # for the console: English and Chinese
    State.DRAFT: ("draft", "草稿"),
    State.SUBMITTED: ("submitted, awaiting the exchange", "已报送，待交易所确认"),
    State.CONFIRMED: ("confirmed by the exchange", "交易所已确认"),
    State.CHANGE_PENDING: ("change being prepared", "变更待报送"),
}


class Transition(msgspec.Struct, frozen=True, kw_only=True):
    ts_ns: int
    step: str
    from_state: str  # "" for the first draft
    to_state: str
    operator: str
    reason: str
    version: int


class Entry(msgspec.Struct, kw_only=True):
    """One account's report: the working version and the version in force."""

    account: str
    state: State
    report: Report  # the working version (what is drafted, submitted or changed)
    version: int = 0  # versions submitted so far (the working one is version + 1 until submitted)
    in_force: Report | None = None  # the version last confirmed
    confirmed_version: int = 0
    exchange_ref: str = ""  # the exchange's reference in its confirmation
    history: list[Transition] = []


class Correction(msgspec.Struct, kw_only=True):
    """A finding that the account's trading no longer matches its report (art. 11)."""

    account: str
    since_ns: int
    deadline_ns: int  # CLOSE_ONLY from then on unless a corrected report is submitted
    detail: str
    enforced: bool = False  # the account was set close-only for it


class Snapshot(msgspec.Struct, array_like=True):
    entries: list[Entry]
    corrections: list[Correction]


class RegistryError(ValueError):
    """A request the registry refuses: ``status`` is the HTTP status the admin plane answers
    with (400 malformed, 404 unknown account or report, 409 not allowed in this state)."""

    def __init__(self, status: int, text: str, field: str = "") -> None:
        super().__init__(text)
        self.status = status
        self.field = field


def parse_report(data: Any, where: str = "report") -> Report:
    """A report from JSON-like data, checked whole; an error names the bad field."""
    try:
        report = msgspec.convert(data, Report)
    except msgspec.ValidationError as err:
        text, _, at = str(err).partition(" - at `")
        path = where + at.rstrip("`").removeprefix("$")
        if text.startswith("Object contains unknown field"):
            text = "unknown field " + text.removeprefix("Object contains unknown field ")
        raise RegistryError(400, f"{path}: {text}", path) from None
    h = report.hft
    if h is not None and h.max_per_day < h.max_per_sec:
        raise RegistryError(400, f"{where}.hft.max_per_day: {h.max_per_day} is below "
                                 f"max_per_sec {h.max_per_sec}", f"{where}.hft.max_per_day")
    if not report.basics.trading_codes:
        raise RegistryError(400, f"{where}.basics.trading_codes: expected at least one "
                                 "exchange -> trading code", f"{where}.basics.trading_codes")
    return report


class Registry:
    """The reports of every account and the findings that need correction.

    ``engine`` is the risk engine (either one): ``apply`` sets the registration and HFT maxima
    a step implies. ``killswitch`` journals live steps and sets accounts close-only; it is None
    in pure uses (tests of the table, the journal tools)."""

    def __init__(self, accounts: list[str], engine: Any, *, grace_ns: int,
                 killswitch: KillSwitch | None = None) -> None:
        self.accounts = frozenset(accounts)
        self.engine = engine
        self.grace_ns = grace_ns
        self.killswitch = killswitch
        self.entries: dict[str, Entry] = {}
        self.corrections: dict[str, Correction] = {}
        self.on_change: Any = None  # called after a new finding (wakes the grace timer)
        self.on_apply: Any = None  # called after any change of reports (conformance.refresh)

    # ------------------------------------------------------------------ the table
    def allowed(self, account: str) -> list[str]:
        entry = self.entries.get(account)
        state = entry.state if entry is not None else None
        return [step for step in STEPS if (state, step) in TABLE]

    def target(self, account: str, step: str) -> State:
        """The state ``step`` leads to, or a 409 naming what is allowed instead."""
        if account not in self.accounts:
            raise RegistryError(404, f"unknown account {account!r}")
        if step not in STEPS:
            raise RegistryError(400, f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
        entry = self.entries.get(account)
        state = entry.state if entry is not None else None
        to = TABLE.get((state, step))
        if to is None:
            now = f"is {state.value}" if state is not None else "has no report yet"
            can = ", ".join(self.allowed(account)) or "nothing"
            raise RegistryError(409, f"account {account}'s report {now}: cannot {step} it; "
                                     f"allowed now: {can}")
        if step == "return" and entry is not None and entry.in_force is not None:
            to = State.CHANGE_PENDING
        return to

    # ------------------------------------------------------------------ live steps
    def step(self, account: str, step: str, *, operator: str, reason: str, now: int,
             report: Report | None = None, exchange_ref: str = "",
             emergency: bool = False) -> Entry:
        """Check a step against the table, journal it, then apply it (write-ahead)."""
        self.target(account, step)
        entry = self.entries.get(account)
        if step == "draft" and report is None:
            raise RegistryError(400, "report: required to draft a report", "report")
        if step == "confirm" and not exchange_ref.strip():
            raise RegistryError(400, "exchange_ref: the exchange's reference of its "
                                     "confirmation is required", "exchange_ref")
        if step == "change" and report is None and entry is not None:
            report = entry.in_force
        args: dict[str, Any] = {}
        if report is not None and step in ("draft", "change"):
            args["report"] = msgspec.to_builtins(report)
        if exchange_ref:
            args["exchange_ref"] = exchange_ref
        self._journal(operator, f"registry_{step}", account, reason, now, emergency, args)
        self.apply_step(step, account, args, operator, reason, now)
        return self.entries[account]

    def looser(self, account: str, step: str) -> str:
        """What a step would loosen in the live checks ("" nothing): change control asks."""
        view = self.engine.account_view(account)
        current = ProgReg[view["programmatic"]]
        entry = self.entries.get(account)
        if step == "submit" and current == ProgReg.NONE:
            return "registration NONE -> REPORTED"
        if step == "confirm" and entry is not None:
            if current < ProgReg.CONFIRMED:
                return f"registration {current.name} -> CONFIRMED"
            old = entry.in_force.hft if entry.in_force is not None else None
            new = entry.report.hft
            if new is not None and (old is None or new.max_per_sec > old.max_per_sec
                                    or new.max_per_day > old.max_per_day):
                return f"HFT maxima -> {new.max_per_sec}/s, {new.max_per_day}/day"
        return ""

    def _journal(self, operator: str, action: str, account: str, reason: str, now: int,
                 emergency: bool, args: dict[str, Any]) -> None:
        if self.killswitch is not None:
            self.killswitch.audit(operator, action, KillScope.ACCOUNT, account, reason, now,
                                  emergency=emergency, **args)

    # ------------------------------------------------------------------ the one mutation
    def apply(self, action: str, account: str, args: dict[str, Any], operator: str,
              reason: str, now: int) -> None:
        """A journaled ``registry_*`` action (replay), applied exactly as it was live."""
        name = action.removeprefix("registry_")
        if name == "flag":
            self._flagged(account, args, now)
        elif name == "close_only":
            c = self.corrections.get(account)
            if c is not None:
                c.enforced = True
        else:
            self.apply_step(name, account, args, operator, reason, now)

    def _applied(self) -> None:
        if self.on_apply is not None:
            self.on_apply()

    def apply_step(self, step: str, account: str, args: dict[str, Any], operator: str,
                   reason: str, now: int) -> None:
        to = self.target(account, step)
        entry = self.entries.get(account)
        given = parse_report(args["report"]) if "report" in args else None
        before = entry.state.value if entry is not None else ""
        if entry is None:
            assert given is not None  # the table allows only "draft" here, which needs one
            entry = self.entries[account] = Entry(account=account, state=to, report=given)
        elif given is not None:
            entry.report = given
        entry.state = to
        if step == "submit":
            entry.version += 1
            self.corrections.pop(account, None)  # a corrected report is in
            if ProgReg[self.engine.account_view(account)["programmatic"]] == ProgReg.NONE:
                self.engine.set_programmatic(account, ProgReg.REPORTED)
        elif step == "confirm":
            entry.in_force = entry.report
            entry.confirmed_version = entry.version
            entry.exchange_ref = str(args.get("exchange_ref", ""))
            self._enforce_in_force(entry)
        # The version the step concerns: the one submitted or confirmed, else the one drafted.
        working = entry.version + (to in (State.DRAFT, State.CHANGE_PENDING))
        entry.history.append(Transition(ts_ns=now, step=step, from_state=before,
                                        to_state=to.value, operator=operator, reason=reason,
                                        version=working))
        del entry.history[:-HISTORY_KEPT]
        self._applied()

    def _enforce_in_force(self, entry: Entry) -> None:
        """The confirmed version's figures become the account's registration (§4.8)."""
        self.engine.set_programmatic(entry.account, ProgReg.CONFIRMED)
        hft = entry.in_force.hft if entry.in_force is not None else None
        if hft is not None:
            self.engine.set_hft(entry.account, hft.max_per_sec, hft.max_per_day)
        else:
            self.engine.set_hft(entry.account, 0, 0)

    # ------------------------------------------------------------------ corrections
    def registered(self, account: str) -> bool:
        """Covered by a report (submitted or confirmed) or by its configured registration."""
        entry = self.entries.get(account)
        if entry is not None and (entry.in_force is not None or entry.state == State.SUBMITTED):
            return True
        return ProgReg[self.engine.account_view(account)["programmatic"]] != ProgReg.NONE

    def reported_hft(self, account: str) -> HftReport | None:
        entry = self.entries.get(account)
        return entry.in_force.hft if entry is not None and entry.in_force is not None else None

    def flag(self, account: str, detail: str, now: int, router: Any) -> bool:
        """Live: the account's trading no longer matches its report. Journaled, then alerted
        (1314, scoped to the account, journaled by the router as every alert is); once per
        finding until a corrected report is submitted. Returns whether it was new."""
        if account in self.corrections or account not in self.accounts:
            return False
        args = {"code": int(Reason.REPORT_NEEDS_CORRECTION), "detail": detail,
                "deadline_ns": now + self.grace_ns}
        self._journal("registry", "registry_flag", account, detail, now, False, args)
        self._flagged(account, args, now)
        grace = self.grace_ns / 1e9
        router.alert(AlertLevel.CRITICAL, Reason.REPORT_NEEDS_CORRECTION, f"account:{account}",
                     f"report needs correction: {detail}; submit a corrected programmatic-"
                     f"trading report within {grace:g} s or opening orders are refused "
                     "(close-only)", now)
        if self.on_change is not None:
            self.on_change()
        return True

    def _flagged(self, account: str, args: dict[str, Any], now: int) -> None:
        self.corrections[account] = Correction(account=account, since_ns=now,
                                               deadline_ns=int(args["deadline_ns"]),
                                               detail=str(args.get("detail", "")))

    def next_deadline(self) -> int | None:
        due = [c.deadline_ns for c in self.corrections.values() if not c.enforced]
        return min(due) if due else None

    def enforce_due(self, now: int) -> list[str]:
        """Live: accounts whose grace period ended without a corrected report go CLOSE_ONLY
        (journaled by the kill switch's status path, then marked here). An account already
        close-only or suspended stays as it is. Returns the accounts set close-only."""
        done: list[str] = []
        for c in sorted(self.corrections.values(), key=lambda c: (c.deadline_ns, c.account)):
            if c.enforced or c.deadline_ns > now or self.killswitch is None:
                continue
            status = AccountStatus[self.engine.account_view(c.account)["status"]]
            if status == AccountStatus.ACTIVE:
                self.killswitch.set_status(c.account, AccountStatus.CLOSE_ONLY,
                                           operator="registry", now=now,
                                           reason="programmatic-trading report not corrected "
                                                  f"within the grace period (art. 11): {c.detail}")
                done.append(c.account)
            self._journal("registry", "registry_close_only", c.account,
                          "grace period over", now, False, {})
            c.enforced = True
        return done

    # ------------------------------------------------------------------ checkpoint
    def encode(self) -> bytes:
        return msgspec.msgpack.encode(Snapshot(
            sorted(self.entries.values(), key=lambda e: e.account),
            sorted(self.corrections.values(), key=lambda c: c.account)))

    def restore(self, data: bytes) -> None:
        """The registry as a checkpoint carried it; the versions in force are enforced again
        (the checkpoint's own registrations already hold the programmatic state)."""
        self.entries.clear()
        self.corrections.clear()
        if not data:
            self._applied()
            return
        snap = msgspec.msgpack.decode(data, type=Snapshot)
        for e in snap.entries:
            if e.account in self.accounts:
                self.entries[e.account] = e
                if e.in_force is not None:
                    hft = e.in_force.hft
                    self.engine.set_hft(e.account, hft.max_per_sec if hft else 0,
                                        hft.max_per_day if hft else 0)
        for c in snap.corrections:
            if c.account in self.accounts:
                self.corrections[c.account] = c
        self._applied()

    # ------------------------------------------------------------------ views
    def view(self, account: str, now: int | None = None) -> dict[str, Any]:
        """Console-ready JSON of one account: its report, the figures enforced, the steps it
        allows, any correction due, and its history (newest last)."""
        if account not in self.accounts:
            raise RegistryError(404, f"unknown account {account!r}")
        entry = self.entries.get(account)
        acct = self.engine.account_view(account)
        c = self.corrections.get(account)
        hft = self.reported_hft(account)
        out: dict[str, Any] = {
            "account": account,
            "state": entry.state.value if entry is not None else None,
            "label": dict(zip(("en", "zh"), LABELS[entry.state], strict=True))
            if entry is not None else {"en": "no report", "zh": "未报告"},
            "version": entry.version if entry is not None else 0,
            "confirmed_version": entry.confirmed_version if entry is not None else 0,
            "exchange_ref": entry.exchange_ref if entry is not None else "",
            "allowed": self.allowed(account),
            "report": msgspec.to_builtins(entry.report) if entry is not None else None,
            "in_force": msgspec.to_builtins(entry.in_force)
            if entry is not None and entry.in_force is not None else None,
            "enforced": {"programmatic": acct["programmatic"], "status": acct["status"],
                         "hft": None if hft is None else {"max_per_sec": hft.max_per_sec,
                                                          "max_per_day": hft.max_per_day}},
            "correction": None if c is None else {
                "since_ns": c.since_ns, "deadline_ns": c.deadline_ns, "detail": c.detail,
                "since": china_time(c.since_ns), "deadline": china_time(c.deadline_ns),
                "close_only": c.enforced,
                **({"seconds_left": max(0.0, round((c.deadline_ns - now) / 1e9, 1))}
                   if now is not None and not c.enforced else {})},
            "history": [{**msgspec.to_builtins(t), "time": china_time(t.ts_ns)}
                        for t in entry.history] if entry is not None else [],
        }
        return out

    def views(self, now: int | None = None) -> list[dict[str, Any]]:
        return [self.view(a, now) for a in sorted(self.accounts)]


# ---------------------------------------------------------------------- export
EXPORT_COLUMNS = (
    "exchange", "trading_code", "account", "state", "version", "confirmed_version",
    "exchange_ref", "trader_name", "futures_company", "product_manager", "execution_method",
    "software_name", "software_version", "basic_functions", "developer", "hft",
    "strategy_type", "max_per_sec", "max_per_day", "server_location", "test_report",
    "emergency_plan", "risk_measures",
)
WHICH = ("current", "in_force")


def export_rows(registry: Registry, exchange: str, which: str = "current") -> list[dict[str, Any]]:
    """One row per account with a trading code on ``exchange``, sorted by trading code: the
    working version (``current``: what is being submitted) or the confirmed one (``in_force``;
    accounts without one are left out)."""
    if which not in WHICH:
        raise RegistryError(400, f"which: expected one of {', '.join(WHICH)}, got {which!r}",
                            "which")
    rows = []
    for entry in registry.entries.values():
        report = entry.report if which == "current" else entry.in_force
        if report is None or exchange not in report.basics.trading_codes:
            continue
        b, s, h = report.basics, report.software, report.hft
        rows.append({
            "exchange": exchange, "trading_code": b.trading_codes[exchange],
            "account": entry.account, "state": entry.state.value,
            "version": entry.version if which == "current" else entry.confirmed_version,
            "confirmed_version": entry.confirmed_version, "exchange_ref": entry.exchange_ref,
            "trader_name": b.trader_name, "futures_company": b.futures_company,
            "product_manager": b.product_manager, "execution_method": s.execution_method,
            "software_name": s.software_name, "software_version": s.software_version,
            "basic_functions": s.basic_functions, "developer": s.developer,
            "hft": h is not None,
            "strategy_type": h.strategy_type if h else "",
            "max_per_sec": h.max_per_sec if h else 0, "max_per_day": h.max_per_day if h else 0,
            "server_location": h.server_location if h else "",
            "test_report": h.test_report if h else "",
            "emergency_plan": h.emergency_plan if h else "",
            "risk_measures": h.risk_measures if h else "",
        })
    rows.sort(key=lambda r: (r["trading_code"], r["account"]))
    return rows


def export_csv(rows: list[dict[str, Any]]) -> str:
    """UTF-8 CSV, a header of ``EXPORT_COLUMNS``, ``\\n`` line ends; booleans as 0/1."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(EXPORT_COLUMNS)
    for r in rows:
        w.writerow([int(v) if isinstance(v, bool) else v for v in (r[c] for c in EXPORT_COLUMNS)])
    return out.getvalue()


def export_json(rows: list[dict[str, Any]], exchange: str, which: str) -> dict[str, Any]:
    return {"exchange": exchange, "which": which, "columns": list(EXPORT_COLUMNS),
            "reports": rows}


def china_time(ts_ns: int) -> str:
    """A timestamp as the console shows it: exchange (China) time, to the millisecond."""
    return datetime.fromtimestamp(ts_ns / 1e9, CHINA_TZ).isoformat(timespec="milliseconds")


def grace_ns(seconds: float) -> int:
    if not (math.isfinite(seconds) and 0 <= seconds <= 30 * 86_400):
        raise ValueError(f"expected 0 .. {30 * 86_400} seconds, got {seconds}")
    return int(seconds * 1e9)
