"""The programmatic-trading registry (issue 14, part 1): lifecycle, live checks, correction.

In-process: a real ``Gateway`` (engine, router, kill switch, journal on disk) with a stand-in
exchange link and client session, so each transition's effect on the live checks and on a
restart (journal replay, from a checkpoint too) is shown without sockets. The same flows over
real processes are in ``test_registry_e2e``.
"""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from checks.engine import Engine as ReferenceEngine
from checks.enums import Hedge, KillScope, Offset, OrdType, ProgReg, Side, Tif
from checks.reasons import Reason
from gateway.compliance.registry import (
    EXPORT_COLUMNS,
    TABLE,
    Registry,
    RegistryError,
    State,
    export_csv,
    export_rows,
    parse_report,
)
from gateway.config import load_gateway_config
from gateway.fast_router import router_class
from gateway.protocol import NewOrder
from gateway.server import Gateway
from tests.conftest import EXAMPLES

S = 1_000_000_000


def _cython():
    from cext.engine import Engine

    return Engine


# The reference engine behind the reference router, and the Cython engine behind the
# compiled order path (gateway/fastroute.pyx): the registry acts the same through both.
ENGINES = pytest.mark.parametrize("engine_cls", [ReferenceEngine, "cython"],
                                  ids=["reference", "cython"])
ROUTERS = {ReferenceEngine: "reference", "cython": "fast"}


def report(per_sec: int | None = None, per_day: int | None = None, **basics) -> dict:
    out = {
        "basics": {"trader_name": "Huang Quant Fund No. 3", "trading_codes": {"SHFE": "81000123",
                   "DCE": "0203"}, "futures_company": "Demo Futures Co.",
                   "product_manager": "Huang Asset Management", **basics},
        "software": {"execution_method": "fully automated", "software_name": "hq-trader",
                     "software_version": "4.2.1", "basic_functions": "signal, order entry, "
                     "risk pre-checks", "developer": "in house"},
    }
    if per_sec is not None:
        out["hft"] = {"strategy_type": "market making", "max_per_sec": per_sec,
                      "max_per_day": per_day, "server_location": "SHFE colocation, rack 12",
                      "test_report": "TR-2026-044", "emergency_plan": "kill switch drill",
                      "risk_measures": "per-second throttle, position caps"}
    return out


class FakeLink:
    up = True

    def __init__(self) -> None:
        self.sent: list = []

    def send(self, msg) -> bool:  # noqa: ANN001
        self.sent.append(msg)
        return True


class FakeSession:
    closed = False
    cancel_on_disconnect = False

    def __init__(self, sid: int, user: str, accounts: list[str]) -> None:
        self.session_id, self.user, self.accounts = sid, user, frozenset(accounts)
        self.out: list = []

    def send(self, msg) -> None:  # noqa: ANN001
        self.out.append(msg)


def config(tmp_path, grace_s: float = 60.0):
    text = (EXAMPLES / "gateway.toml").read_text().replace(
        'risk_config = "risk.toml"', f'risk_config = "{EXAMPLES / "risk.toml"}"')
    text += (f'\n[journal]\ndir = "{tmp_path / "journal"}"\nfsync = "os"\n'
             f"[compliance]\ncorrection_grace_s = {grace_s}\nprogrammatic_per_sec = 3\n"
             "programmatic_occasions = 2\n")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return load_gateway_config(path)


class Harness:
    """A gateway with a stand-in link and one client session trading every account."""

    def __init__(self, tmp_path, engine_cls=ReferenceEngine, grace_s: float = 60.0) -> None:
        router_cls = router_class(ROUTERS[engine_cls])
        engine_cls = _cython() if engine_cls == "cython" else engine_cls
        self.gw = Gateway(config(tmp_path, grace_s), engine_cls=engine_cls, router_cls=router_cls)
        self.link = FakeLink()
        self.gw.router.link = self.link
        self.session = FakeSession(9000 + len(self.gw.router.sessions), "algo1",
                                   [a.id for a in self.gw.cfg.risk.accounts])
        self.gw.engine.register_session(self.session.session_id, False)
        self.gw.router.add_session(self.session)
        self.n = 0

    def order(self, account: str, now: int, price: float = 3200.0) -> int:
        """One opening order; its reason (0 accepted)."""
        self.n += 1
        before = len(self.session.out)
        self.gw.router.new_order(self.session, NewOrder(
            f"o{self.n}", account, "rb2605", Side.BUY, Offset.OPEN, Hedge.SPEC, OrdType.LIMIT,
            Tif.GFD, price, 1), now)
        reports = [m for m in self.session.out[before:] if type(m).__name__ == "ExecReport"]
        return reports[0].reason if reports else 0

    def busy_seconds(self, accounts: tuple[str, ...], t: int, gap: int = 1) -> list[int]:
        """Two busy seconds (2 s apart): one order per account named, ``gap`` ns apart, in
        each; the standard configured here is 2 seconds of >= 3. Returns the reasons."""
        return [self.order(a, t + 2 * sec * S + i * gap, price=3200.0 + sec)
                for sec in range(2) for i, a in enumerate(accounts)]

    def step(self, account: str, step: str, now: int, **kw) -> None:
        rep = kw.pop("report", None)
        self.gw.registry.step(account, step, operator="risk-officer-li", reason=f"{step} it",
                              now=now, report=parse_report(rep) if rep else None, **kw)

    def close(self) -> None:
        self.gw.router.audit.close()


# ---------------------------------------------------------------------- the table
def registry() -> Registry:
    cfg = load_gateway_config(EXAMPLES / "gateway.toml")
    return Registry([a.id for a in cfg.risk.accounts], ReferenceEngine(cfg.risk), grace_ns=S)


def test_every_transition_of_the_table_and_nothing_else():
    """Each row of the table is taken; every other (state, step) pair is refused with 409,
    naming the state and what it allows, and changes nothing."""
    reg = registry()
    now = 1
    paths = {  # a way to reach each state, then the step under test
        None: [], State.DRAFT: ["draft"], State.SUBMITTED: ["draft", "submit"],
        State.CONFIRMED: ["draft", "submit", "confirm"],
        State.CHANGE_PENDING: ["draft", "submit", "confirm", "change"],
    }
    accounts = iter(sorted(reg.accounts) * 10)
    for state, path in paths.items():
        for step in ("draft", "submit", "confirm", "return", "change"):
            reg.entries.clear()
            account = next(accounts)
            for s in path:
                reg.apply_step(s, account, {"report": report(), "exchange_ref": "X1"}
                               if s == "draft" else {"exchange_ref": "X1"}, "op", "", now)
            before = msgspec.to_builtins(reg.entries.get(account))
            args = {"report": report()} if step == "draft" else {"exchange_ref": "X2"}
            if (state, step) in TABLE:
                reg.apply_step(step, account, args, "op", "why", now)
                want = TABLE[(state, step)]
                if step == "return" and state == State.SUBMITTED and "confirm" in path:
                    want = State.CHANGE_PENDING  # pragma: no cover - not on these paths
                assert reg.entries[account].state == want
                assert reg.entries[account].history[-1].step == step
            else:
                with pytest.raises(RegistryError) as err:
                    reg.apply_step(step, account, args, "op", "why", now)
                assert err.value.status == 409
                assert f"cannot {step} it; allowed now: " in str(err.value)
                assert msgspec.to_builtins(reg.entries.get(account)) == before


def test_a_returned_report_goes_back_to_draft_or_to_its_change():
    reg = registry()
    for s in ("draft", "submit", "return"):
        reg.apply_step(s, "A001", {"report": report()}, "op", "", 1)
    assert reg.entries["A001"].state == State.DRAFT
    for s in ("submit", "confirm", "change", "submit", "return"):
        reg.apply_step(s, "A001", {"exchange_ref": "R"}, "op", "", 2)
    assert reg.entries["A001"].state == State.CHANGE_PENDING  # the confirmed version stays
    assert reg.entries["A001"].in_force is not None


def test_unknown_account_and_unknown_step_are_named():
    reg = registry()
    with pytest.raises(RegistryError, match="unknown account 'ZZ'") as err:
        reg.target("ZZ", "draft")
    assert err.value.status == 404
    with pytest.raises(RegistryError, match="unknown step 'approve'"):
        reg.target("A001", "approve")


@pytest.mark.parametrize(("change", "field"), [
    (lambda r: r["basics"].pop("trader_name"), "report.basics"),
    (lambda r: r["basics"].update(trader_name=""), "report.basics.trader_name"),
    (lambda r: r["basics"].update(trading_codes={}), "report.basics.trading_codes"),
    (lambda r: r["basics"].update(trading_codes={f"X{i}": "1" for i in range(17)}),
     "report.basics.trading_codes"),
    (lambda r: r["software"].update(software_version="x" * 201), "report.software.software_version"),
    (lambda r: r["software"].update(colour="red"), "report.software"),
    (lambda r: r["hft"].update(max_per_sec=0), "report.hft.max_per_sec"),
    (lambda r: r["hft"].update(max_per_sec=10**9), "report.hft.max_per_sec"),
    (lambda r: r["hft"].update(max_per_day="many"), "report.hft.max_per_day"),
    (lambda r: r["hft"].update(max_per_day=3), "report.hft.max_per_day"),
    (lambda r: r["hft"].update(max_per_sec=float("nan")), "report.hft.max_per_sec"),
])
def test_a_bad_report_is_refused_naming_the_field(change, field):
    r = report(10, 100)
    change(r)
    with pytest.raises(RegistryError) as err:
        parse_report(r)
    assert err.value.status == 400
    assert str(err.value).startswith(field), str(err.value)


# ---------------------------------------------------------------------- live checks
@ENGINES
def test_confirmed_hft_figures_are_the_limits_and_a_change_keeps_them_until_confirmed(
        tmp_path, engine_cls):
    h = Harness(tmp_path, engine_cls)
    t = time.time_ns()
    # A001: programmatic, no HFT registration: the exchange's HFT standard (300/s) applies.
    h.step("A001", "draft", t, report=report(3, 6))
    h.step("A001", "submit", t + 1)
    assert [h.order("A001", t + 10 + i) for i in range(4)] == [0, 0, 0, 0]  # not in force yet
    h.step("A001", "confirm", t + 20, exchange_ref="SHFE-0012")
    view = h.gw.registry.view("A001")
    assert view["enforced"]["hft"] == {"max_per_sec": 3, "max_per_day": 6}
    # 4 orders in the last second already: over the reported 3 per second
    assert h.order("A001", t + 30) == Reason.HFT_LIMIT
    t2 = t + 2 * S
    assert [h.order("A001", t2 + i) for i in range(2)] == [0, 0]  # 6 today: the daily figure
    assert h.order("A001", t2 + 5 * S) == Reason.HFT_LIMIT
    # A change is prepared and submitted: the confirmed figures stay in force meanwhile.
    h.step("A001", "change", t2 + 6 * S, report=report(50, 5000))
    h.step("A001", "submit", t2 + 7 * S)
    assert h.gw.registry.view("A001")["enforced"]["hft"]["max_per_day"] == 6
    assert h.order("A001", t2 + 8 * S) == Reason.HFT_LIMIT
    h.step("A001", "confirm", t2 + 9 * S, exchange_ref="SHFE-0013")
    assert h.order("A001", t2 + 10 * S) == 0  # the new version's figures
    assert h.gw.registry.view("A001")["enforced"]["hft"] == {"max_per_sec": 50,
                                                            "max_per_day": 5000}
    # a confirmed report without an HFT section unregisters it: the standard applies again
    h.step("A001", "change", t2 + 11 * S, report=report())
    h.step("A001", "submit", t2 + 12 * S)
    h.step("A001", "confirm", t2 + 13 * S, exchange_ref="SHFE-0014")
    assert h.gw.registry.view("A001")["enforced"]["hft"] is None
    assert h.gw.engine.account_view("A001")["programmatic"] == "CONFIRMED"
    h.close()


def test_submit_reports_an_unregistered_account_and_confirm_confirms_it(tmp_path):
    h = Harness(tmp_path)
    t = time.time_ns()
    assert h.gw.engine.account_view("A003")["programmatic"] == "NONE"
    h.step("A003", "draft", t, report=report())
    assert h.gw.engine.account_view("A003")["programmatic"] == "NONE"
    h.step("A003", "submit", t + 1)
    assert h.gw.engine.account_view("A003")["programmatic"] == "REPORTED"
    h.step("A003", "confirm", t + 2, exchange_ref="X")
    assert h.gw.engine.account_view("A003")["programmatic"] == "CONFIRMED"
    h.close()


def _journal_actions(h: Harness) -> list:
    from gateway import journal as jr

    h.gw.router.audit.flush()
    return [r for _, r in jr.JournalReader(h.gw.journal.directory) if type(r) is jr.AdminAction]


@ENGINES
def test_replay_and_a_checkpoint_rebuild_the_registry_exactly(tmp_path, engine_cls):
    h = Harness(tmp_path, engine_cls)
    t = time.time_ns()
    h.step("A001", "draft", t, report=report(3, 100))
    h.step("A001", "submit", t + 1)
    h.step("A001", "confirm", t + 2, exchange_ref="SHFE-1")
    h.step("A004", "draft", t + 3, report=report())
    h.gw.checkpoint_now(h.gw.router.day, t + 4)  # what a new trading day writes
    h.step("A001", "change", t + 5, report=report(9, 900))
    h.step("A004", "submit", t + 6)
    h.step("A005", "draft", t + 7, report=report(5, 50, trader_name="Huang Two"))
    live = h.gw.registry.encode()
    h.close()
    again = Harness(tmp_path, engine_cls)
    assert again.gw.recovery.from_seq > 1  # from the checkpoint, not the first record
    assert again.gw.registry.encode() == live
    assert again.gw.registry.view("A001")["enforced"]["hft"] == {"max_per_sec": 3,
                                                                "max_per_day": 100}
    t = time.time_ns()
    assert [again.order("A001", t + i) for i in range(4)] == [0, 0, 0, Reason.HFT_LIMIT]
    again.close()


# ---------------------------------------------------------------------- correction
@ENGINES
def test_unregistered_programmatic_behaviour_is_flagged_then_close_only_after_the_grace(
        tmp_path, engine_cls):
    h = Harness(tmp_path, engine_cls, grace_s=30)
    t = time.time_ns()
    # A003 is not registered: 2 seconds with >= 3 orders (the configured standard here)
    assert h.busy_seconds(("A003",) * 3, t, gap=1000) == [0] * 6
    c = h.gw.registry.corrections["A003"]
    assert c.deadline_ns == t + 2 * S + 2000 + 30 * S and not c.enforced
    alerts = [a for a in h.gw.router.alerts if a.code == Reason.REPORT_NEEDS_CORRECTION]
    assert [a.scope for a in alerts] == ["account:A003"]
    assert any(getattr(m, "code", 0) == Reason.REPORT_NEEDS_CORRECTION for m in h.session.out)
    # nothing before the deadline; at it, close-only (journaled by the status path)
    assert h.gw.registry.enforce_due(c.deadline_ns - 1) == []
    assert h.gw.registry.enforce_due(c.deadline_ns) == ["A003"]
    assert h.gw.engine.account_view("A003")["status"] == "CLOSE_ONLY"
    assert h.order("A003", c.deadline_ns + 1) == Reason.ACCOUNT_CLOSE_ONLY
    assert h.gw.registry.enforce_due(c.deadline_ns + 2) == []  # once
    actions = [(a.action, a.operator) for a in _journal_actions(h)]
    assert ("registry_flag", "registry") in actions
    assert ("set_status", "registry") in actions and ("registry_close_only", "registry") in actions
    live = h.gw.registry.encode()
    h.close()
    again = Harness(tmp_path, engine_cls, grace_s=30)  # a restart: the same registry, status
    assert again.gw.registry.encode() == live
    assert again.gw.engine.account_view("A003")["status"] == "CLOSE_ONLY"
    assert again.gw.registry.enforce_due(time.time_ns() + 60 * S) == []  # not again
    again.close()


def test_a_finding_survives_a_restart_and_its_grace_ends_after_it(tmp_path):
    h = Harness(tmp_path, grace_s=30)
    t = time.time_ns()
    h.busy_seconds(("A003",) * 3, t)
    deadline = h.gw.registry.corrections["A003"].deadline_ns
    h.close()
    again = Harness(tmp_path, grace_s=30)
    assert again.gw.registry.next_deadline() == deadline
    assert again.gw.registry.enforce_due(deadline) == ["A003"]
    again.close()


@ENGINES
def test_related_accounts_are_counted_together(tmp_path, engine_cls):
    """A004 and A005 are under common control: neither alone has a busy second, together
    they have two — both are flagged once they are unregistered."""
    h = Harness(tmp_path, engine_cls)
    t = time.time_ns()
    for a in ("A004", "A005"):  # as the admin plane would: journaled, then applied
        h.gw.killswitch.audit("risk-officer-li", "set_programmatic", KillScope.ACCOUNT, a,
                              "registration withdrawn", t, registration="NONE")
        h.gw.engine.set_programmatic(a, ProgReg.NONE)
    h.gw.conformance.refresh()
    assert h.busy_seconds(("A004", "A005", "A004"), t) == [0] * 6
    assert sorted(h.gw.registry.corrections) == ["A004", "A005"]
    assert "account group G-HUANG" in h.gw.registry.corrections["A005"].detail
    h.close()


def test_a_corrected_report_clears_the_finding(tmp_path):
    h = Harness(tmp_path, grace_s=30)
    t = time.time_ns()
    h.busy_seconds(("A003",) * 3, t)
    assert "A003" in h.gw.registry.corrections
    h.step("A003", "draft", t + 3 * S, report=report())
    assert "A003" in h.gw.registry.corrections  # a draft is not a report
    h.step("A003", "submit", t + 4 * S)
    assert "A003" not in h.gw.registry.corrections
    assert h.gw.registry.enforce_due(t + 100 * S) == []
    assert h.gw.engine.account_view("A003")["status"] == "ACTIVE"
    h.close()


def test_exceeding_the_reported_figures_needs_correction(tmp_path):
    """Cancels are never refused, so an HFT account can pass its reported per-second figure
    with them; an order refused at the figure counts too."""
    h = Harness(tmp_path)
    t = time.time_ns()
    h.step("H001", "draft", t, report=report(3, 1000))
    h.step("H001", "submit", t + 1)
    h.step("H001", "confirm", t + 2, exchange_ref="R")
    t += 5 * S
    assert [h.order("H001", t + i) for i in range(3)] == [0, 0, 0]
    assert "H001" not in h.gw.registry.corrections
    assert h.order("H001", t + 3) == Reason.HFT_LIMIT
    assert "reported" in h.gw.registry.corrections["H001"].detail or \
        "faster" in h.gw.registry.corrections["H001"].detail
    h.close()


# ---------------------------------------------------------------------- export
def test_export_layout_per_exchange(tmp_path):
    h = Harness(tmp_path)
    t = time.time_ns()
    h.step("A001", "draft", t, report=report(3, 100))
    h.step("A004", "draft", t, report=report(trading_codes={"SHFE": "81000001"}))
    rows = export_rows(h.gw.registry, "SHFE")
    assert [(r["trading_code"], r["account"]) for r in rows] == [("81000001", "A004"),
                                                                 ("81000123", "A001")]
    assert [r["account"] for r in export_rows(h.gw.registry, "DCE")] == ["A001"]
    assert export_rows(h.gw.registry, "SHFE", "in_force") == []
    text = export_csv(rows)
    lines = text.splitlines()
    assert lines[0] == ",".join(EXPORT_COLUMNS)
    assert lines[2].startswith("SHFE,81000123,A001,DRAFT,0,0,,Huang Quant Fund No. 3,")
    assert ",1,market making,3,100," in lines[2] and ",0,,0,0," in lines[1]
    assert export_csv(rows) == text  # the same registry, the same bytes
    h.close()


def test_the_daily_report_lists_the_account_whose_report_needs_correction(tmp_path):
    """The contract with the daily report: the 1314 alert is journaled on the day it is
    raised, so the report rebuilt from the journal lists the account (part 2 of issue 14)."""
    from gateway.compliance.report import build

    h = Harness(tmp_path, grace_s=30)
    t = time.time_ns()
    h.busy_seconds(("A003",) * 3, t)
    day = h.gw.router.day
    h.close()
    daily = build(h.gw.cfg, tmp_path / "journal", day)
    assert [c[0] for c in daily.corrections] == ["A003"]
    assert [a.account for a in daily.accounts if a.needs_correction] == ["A003"]


def test_cli_mistakes_end_in_one_line_and_an_exit_code(tmp_path, capsys):
    from gateway.compliance.registry_cli import main

    assert main(["--admin", "http://127.0.0.1:1", "list"]) == 1
    assert capsys.readouterr().err.strip() == ("fengkong registry list: cannot reach the admin "
                                               "plane at http://127.0.0.1:1: [Errno 111] "
                                               "Connection refused")
    assert main(["draft", "A001", "--file", str(tmp_path / "missing.json")]) == 2
    assert "missing.json" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{bad")
    assert main(["--admin", "http://127.0.0.1:1", "draft", "A001",
                 "--file", str(tmp_path / "bad.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad.json: not JSON" in err
    with pytest.raises(SystemExit) as exit_:
        main(["confirm", "A001"])  # --exchange-ref is required
    assert exit_.value.code == 2


async def test_a_deadline_that_passed_while_down_is_enforced_when_the_gateway_starts(tmp_path):
    h = Harness(tmp_path, grace_s=0)
    h.busy_seconds(("A003",) * 3, time.time_ns() - 10 * S)
    assert "A003" in h.gw.registry.corrections  # found, not yet enforced: then the crash
    h.close()
    again = Harness(tmp_path, grace_s=0)
    told = asyncio.Event()
    again.session.send = lambda msg: told.set() if getattr(msg, "code", 0) == \
        Reason.KILL_SWITCH else None
    timer = asyncio.create_task(again.gw._registry_grace())  # what Gateway.start runs
    try:
        await asyncio.wait_for(told.wait(), 10)
    finally:
        timer.cancel()
    assert again.gw.engine.account_view("A003")["status"] == "CLOSE_ONLY"
    assert again.gw.registry.corrections["A003"].enforced
    again.close()


def test_cli_show_reads_the_console_view(tmp_path, capsys):
    from gateway.compliance.registry_cli import _show

    h = Harness(tmp_path)
    t = time.time_ns()
    h.step("A003", "draft", t, report=report(3, 100))
    h.busy_seconds(("A003",) * 3, t)
    _show(msgspec.json.decode(msgspec.json.encode(h.gw.registry.view("A003", t))))
    out = capsys.readouterr().out
    assert "account A003: draft / 草稿" in out
    assert "NEEDS CORRECTION: trades programmatically without a report" in out
    assert "allowed steps: draft, submit" in out and " draft    - -> DRAFT v1 by " in out
    h.close()
