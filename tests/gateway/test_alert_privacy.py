"""Alerts reach only the clients they concern, in words meant for clients (issue 10, item 4).

Two real client sessions of different users: ``algo1`` (A001, A002, A004, A005, D001, H001)
and ``manual1`` (A003). A client hears of the accounts it may trade and of firm-wide changes
to its trading, never another account's affairs, an operator's name or a free-text reason;
the risk desk's alert (``/v1/alerts``, the journal, Kafka) keeps the full text.
"""

from __future__ import annotations

from checks.enums import AlertLevel
from checks.reasons import Reason
from gateway.protocol import Alert
from simulator.client import Client
from tests.conftest import Proc
from tests.gateway.test_e2e import RISK_TOKEN, VIEWER_TOKEN, admin, connect

T = 15.0
SECRETS = ("risk-officer-li", "Huang", "wash", "margin call", "lunch")


async def _alerts_until_firm(c: Client) -> list[Alert]:
    """This client's alerts up to and including the next firm-wide one (the test's marker)."""
    seen = []
    while not seen or seen[-1].scope != "firm":
        seen.append(await c.next_alert(timeout=T))
    return seen


def _post(gw: Proc, path: str, body: dict) -> None:
    code, answer = admin(gw, "POST", path, body, token=RISK_TOKEN)
    assert code == 200, answer


async def test_a_client_hears_only_of_its_own_accounts_and_never_who_or_why(gateway_proc):
    algo = await connect(gateway_proc)
    manual = await connect(gateway_proc, "manual1", "manual-secret")
    _post(gateway_proc, "/v1/kill", {"scope": "account", "key": "A001",
                                     "reason": "suspected wash trading by Huang"})
    _post(gateway_proc, "/v1/kill", {"scope": "group", "key": "G-HUANG",
                                     "reason": "Huang's accounts under review"})
    _post(gateway_proc, "/v1/accounts/A003/status", {"status": "SUSPENDED",
                                                     "reason": "margin call unanswered"})
    _post(gateway_proc, "/v1/kill", {"scope": "instrument", "key": "rb2605",
                                     "reason": "fat finger at lunch"})
    _post(gateway_proc, "/v1/kill", {"scope": "firm", "reason": "risk-officer-li: wash trading"})

    heard = {name: await _alerts_until_firm(c) for name, c in (("algo", algo),
                                                                ("manual", manual))}
    assert [a.scope for a in heard["algo"]] == ["account:A001", "group:G-HUANG",
                                                "instrument:rb2605", "firm"]
    assert [a.scope for a in heard["manual"]] == ["account:A003", "instrument:rb2605", "firm"]
    for alert in heard["algo"] + heard["manual"]:
        assert alert.code == Reason.KILL_SWITCH and alert.level == AlertLevel.CRITICAL
        assert not any(s in alert.text for s in SECRETS), alert.text
    assert heard["algo"][0].text.startswith("account A001: stopped by the kill switch")
    assert heard["manual"][0].text.startswith("account A003: suspended")

    # The risk desk keeps who and why.
    _, desk = admin(gateway_proc, "GET", "/v1/alerts", token=VIEWER_TOKEN)
    texts = [a["text"] for a in desk]  # type: ignore[index]
    assert any("risk-officer-li" in t and "suspected wash trading by Huang" in t for t in texts)
    assert any("margin call unanswered" in t for t in texts)

    # Lifting: the same neutral words, to the same clients only.
    _post(gateway_proc, "/v1/reset", {"scope": "account", "key": "A001", "reason": "Huang cleared"})
    _post(gateway_proc, "/v1/reset", {"scope": "firm", "reason": "risk-officer-li: all clear"})
    algo_reset = await _alerts_until_firm(algo)
    manual_reset = await _alerts_until_firm(manual)
    assert [a.scope for a in algo_reset] == ["account:A001", "firm"]
    assert [a.scope for a in manual_reset] == ["firm"]
    for alert in algo_reset + manual_reset:
        assert "kill switch is lifted" in alert.text
        assert not any(s in alert.text for s in (*SECRETS, "cleared", "all clear")), alert.text
    await algo.close()
    await manual.close()
