"""The web console in a real headless Chromium, against the gateway and the simulator as real
processes (issue 13, item 1).

One exchange, one journaled gateway and one browser serve the whole module; orders come from
a native client of the gateway, and the exchange's own truth from a member connected to the
simulator directly. Every wait is an event-driven ``WebDriverWait`` on a browser condition (run
in a worker thread, so the asyncio clients keep reading meanwhile) or an awaited report.

The dashboard screenshot is saved under the test's tmp directory and, when
``FENGKONG_SCREENSHOT_DIR`` is set, there too (``docs/console.png`` is one such screenshot).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from checks.enums import OrdStatus, Side
from checks.reasons import Reason
from simulator.client import Client
from tests.conftest import Proc, start_exchange, start_gateway

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(
    not (shutil.which("chromium") or Path(CHROMIUM).exists())
    or not (shutil.which("chromedriver") or Path(CHROMEDRIVER).exists()),
    reason="needs chromium and chromedriver (make system-deps)")

RISK, ADMIN, VIEWER = "demo-risk-token", "demo-admin-token", "demo-viewer-token"
T = 20.0  # seconds: generous for a loaded 2-core machine (never asserted on)


class Rig:
    def __init__(self, journal: Path) -> None:
        self.ex: Proc = start_exchange()
        self.ex_port = int(self.ex.match.group(1))
        try:
            self.gw: Proc = start_gateway(self.ex_port, "--journal", str(journal))
            self.gw.wait_for("exchange link up")
        except BaseException:
            self.ex.stop()
            raise
        self.port, self.admin_port = int(self.gw.match.group(1)), int(self.gw.match.group(2))
        self.base = f"http://127.0.0.1:{self.admin_port}"

    def admin(self, method: str, path: str, body: dict | None = None,
              token: str = VIEWER) -> tuple[int, Any]:
        req = urllib.request.Request(self.base + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(req, timeout=T) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    async def client(self) -> Client:
        return await Client.connect("127.0.0.1", self.port, "algo1", "algo-secret")

    async def member(self) -> Client:
        """A member of the exchange itself, beside the gateway: it sees the exchange's book."""
        return await Client.connect("127.0.0.1", self.ex_port, "CP", "cp", heartbeat_s=0)

    def stop(self) -> None:
        self.gw.stop()
        self.ex.stop()


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    r = Rig(tmp_path_factory.mktemp("journal"))
    yield r
    r.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1440,1250", "--lang=en-US", "--no-first-run"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or CHROMEDRIVER),
                              options=opts)
    yield driver
    driver.quit()


# ---------------------------------------------------------------------- browser helpers
async def until(driver: Any, cond: Callable[[Any], Any], timeout: float = T) -> Any:
    """Wait for a browser condition with WebDriverWait, off the event loop."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The live view re-renders what changed, so an element found a moment ago may be gone.
    wait = WebDriverWait(driver, timeout, poll_frequency=0.05,
                         ignored_exceptions=(StaleElementReferenceException,))
    return await asyncio.to_thread(wait.until, cond)


async def click(driver: Any, selector: str) -> None:
    """Click the element, found again if the live view replaced it meanwhile."""
    from selenium.common.exceptions import StaleElementReferenceException

    def attempt(d: Any) -> bool:
        found = css(d, selector)
        if not found or not found[0].is_displayed():
            return False
        try:
            found[0].click()
        except StaleElementReferenceException:
            return False
        return True
    await until(driver, attempt)


def css(driver: Any, selector: str) -> list[Any]:
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, selector)


def text_of(selector: str, want: str | Callable[[str], bool]) -> Callable[[Any], Any]:
    """A condition: the element's text is ``want`` (or passes it)."""
    def check(driver: Any) -> Any:
        found = css(driver, selector)
        if not found:
            return False
        got = found[0].text
        return found[0] if (want(got) if callable(want) else got == want) else False
    return check


def shown(selector: str) -> Callable[[Any], Any]:
    def check(driver: Any) -> Any:
        found = css(driver, selector)
        return found[0] if found and found[0].is_displayed() else False
    return check


async def login(driver: Any, rig: Rig, token: str) -> None:
    if css(driver, "#logout") and css(driver, "#logout")[0].is_displayed():
        await click(driver, "#logout")
    else:
        driver.get(rig.base + "/console/")
    box = await until(driver, shown("#login-token"))
    box.send_keys(token)
    css(driver, "#login-submit")[0].click()
    await until(driver, shown("#app"))
    await until(driver, lambda d: css(d, "#accounts tbody tr[data-account='A001']"))


async def confirm_with_reason(driver: Any, reason: str) -> None:
    """The confirmation dialog refuses to confirm until a reason is given."""
    ok = await until(driver, shown("#confirm-ok"))
    assert not ok.is_enabled(), "confirm must wait for a reason"
    css(driver, "#confirm-reason")[0].send_keys(reason)
    await until(driver, lambda d: css(d, "#confirm-ok")[0].is_enabled())
    css(driver, "#confirm-ok")[0].click()


def save_screenshot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    extra = os.environ.get("FENGKONG_SCREENSHOT_DIR")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / name)
    return path


# ---------------------------------------------------------------------- the tests
async def test_officer_sees_orders_flow_kills_an_account_with_a_reason_and_resets_it(
        rig: Rig, browser: Any, tmp_path: Path) -> None:
    d = browser
    await login(d, rig, RISK)
    assert d.execute_script("return sessionStorage.getItem('fengkong.console.token')") == RISK
    assert RISK not in d.current_url
    await until(d, text_of("tr[data-account='A001'] .u-open_orders", lambda s: s.startswith("0 /")))
    # Exchange link, journal and Kafka outbox state.
    await until(d, text_of("#card-link .value", "up"))
    assert css(d, "#card-journal .value")[0].text.startswith("writable")
    assert css(d, "#card-kafka .value")[0].text == "not configured"

    # Orders flow: the account list follows, pushed by the server.
    algo = await rig.client()
    resting = [await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                     price=3190.0 + n, qty=1) for n in range(4)]
    for h in resting:
        await h.acked(timeout=T)
    cell = "tr[data-account='A001'] .u-open_orders"
    await until(d, lambda dr: any(c.text == "4 / 400" and "level-ok" in c.get_attribute("class")
                                  for c in css(dr, cell)))
    # Usage colours: amber from the warning fraction (80 %) on, red at the limit.
    for limit, text, colour in ((5, "4 / 5", "level-warn"), (4, "4 / 4", "level-limit")):
        code, _ = rig.admin("POST", "/v1/accounts/A001/limits",
                            {"limits": {"max_open_orders": limit}, "reason": "tighten"}, RISK)
        assert code == 200
        await until(d, lambda dr, text=text, colour=colour: any(
            c.text == text and colour in c.get_attribute("class") for c in css(dr, cell)))
    await until(d, lambda dr: css(dr, f"#sessions tbody tr[data-session='{algo.session_id}']"))

    # Drill-down: working orders, positions today / yesterday, counters against limits.
    await click(d, "tr[data-account='A001']")
    await until(d, shown("#account-view"))
    await until(d, lambda dr: len(css(dr, "#orders tbody tr.order")) == 4)
    await until(d, text_of("#positions tbody tr[data-symbol='rb2605'] td:nth-child(3)", "20"))
    assert css(d, "#counters tbody tr[data-limit='open_orders']")

    # Kill with a reason: confirmed in a dialog, then seen at the exchange.
    await click(d, "button[data-action='kill-account']")
    await confirm_with_reason(d, "runaway algo (console test)")
    for h in resting:  # CANCELED comes from the exchange: the cancels reached it
        assert (await h.wait_done(timeout=T)).status == OrdStatus.CANCELED
    member = await rig.member()
    sell = await member.send_order(account="A003", symbol="rb2605", side=Side.SELL,
                                   price=3190.0, qty=4)
    await sell.acked(timeout=T)
    assert (sell.status, sell.cum_qty) == (OrdStatus.NEW, 0), "nothing of A001 rests there"
    await member.cancel(sell.cl_ord_id)
    assert (await sell.wait_done(timeout=T)).status == OrdStatus.CANCELED
    blocked = await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                    price=3190.0, qty=1)
    assert (await blocked.wait_done(timeout=T)).reason == Reason.KILLED_ACCOUNT  # 202
    await until(d, text_of("#detail-kill .value", "Kill"))
    await until(d, lambda dr: len(css(dr, "#orders tbody tr.order")) == 0)

    # The dashboard shows the kill, its alert by level name and local ISO time.
    await click(d, "#back")
    await until(d, text_of("tr[data-account='A001'] .kill-state", "Kill"))
    await until(d, text_of("#kills li", lambda s: s.startswith("account A001")))
    alert = await until(d, lambda dr: next((a for a in css(dr, "#alerts li.alert")
                                            if "kill switch engaged" in a.text), False))
    assert alert.get_attribute("data-level") == "CRITICAL" and "CRITICAL" in alert.text
    assert "KILL_SWITCH" in alert.text
    stamp = alert.text.split(" ", 1)[0]  # e.g. 2026-12-01T13:05:02.123+08:00
    assert len(stamp) == 29 and stamp[10] == "T" and stamp[-6] in "+-", stamp
    shot = save_screenshot(d, tmp_path, "console.png")
    assert shot.stat().st_size > 10_000

    # Reset from the drill-down: a new order is accepted again.
    await click(d, "tr[data-account='A001']")
    await until(d, shown("#account-view"))
    await click(d, "button[data-action='reset-account']")
    await confirm_with_reason(d, "algo fixed <b>and</b> re-certified")  # shown as text
    await until(d, text_of("#detail-kill .value", "—"))
    again = await algo.send_order(account="A001", symbol="rb2605", side=Side.BUY,
                                  price=3190.0, qty=1)
    assert (await again.acked(timeout=T)).status == OrdStatus.NEW

    # The audit view reads both actions back from the journal, newest first, with the reasons.
    await click(d, "nav .tab[data-tab='audit']")
    await until(d, lambda dr: len(css(dr, "#audit-table tbody tr.audit-row")) >= 2)
    rows = [r.text for r in css(d, "#audit-table tbody tr.audit-row")]
    assert "reset" in rows[0] and "algo fixed <b>and</b> re-certified" in rows[0]
    assert not css(d, "#audit-table b")  # the reason was written as text, never as HTML
    assert "kill" in rows[1] and "runaway algo (console test)" in rows[1]
    assert "risk-officer-li" in rows[1]
    await algo.close()
    await member.close()


async def test_a_loosening_during_a_session_asks_for_the_emergency_flag(rig: Rig,
                                                                         browser: Any) -> None:
    d = browser
    await login(d, rig, ADMIN)  # the example config trades at any hour: a session is open
    await click(d, "tr[data-account='A004']")
    await until(d, shown("#limit-form"))
    await until(d, lambda dr: css(dr, "#limit-name option[value='max_order_qty']"))
    d.execute_script("document.querySelector('#limit-name').value = 'max_order_qty'")
    css(d, "#limit-value")[0].send_keys("900")  # from 500: looser
    await click(d, "#limit-apply")
    await confirm_with_reason(d, "client asked for bigger clips")
    # The server answers 409 (change control); the console asks for the flag, and will not
    # confirm without it.
    await until(d, shown("#confirm-emergency-label"))
    assert "emergency" in css(d, "#confirm-cc")[0].text
    assert not css(d, "#confirm-ok")[0].is_enabled()
    assert rig.admin("GET", "/v1/accounts/A004")[1]["limits"]["max_order_qty"] == 500
    await click(d, "#confirm-emergency")
    await until(d, lambda dr: css(dr, "#confirm-ok")[0].is_enabled())
    await click(d, "#confirm-ok")
    await until(d, text_of("#limits tbody tr[data-limit='max_order_qty'] td.num", "900"))
    _, audit = rig.admin("GET", "/v1/audit?limit=1")
    newest = audit["entries"][0]
    assert (newest["action"], newest["emergency"], newest["operator"]) == \
        ("set_limits", True, "admin-wang")
    assert newest["args"]["changes"] == {"max_order_qty": 900}


async def test_kill_and_reset_by_any_scope_from_the_kill_switch_panel(rig: Rig,
                                                                      browser: Any) -> None:
    d = browser
    await login(d, rig, RISK)
    d.execute_script("document.querySelector('#scope-kind').value = 'product'")
    css(d, "#scope-key")[0].send_keys("m")
    await click(d, "#scope-close-only")
    await click(d, "#scope-kill")
    await confirm_with_reason(d, "soybean meal limit-down")
    await until(d, text_of("#kills li[data-scope='product']",
                           lambda s: s.startswith("product m — close-only")))
    _, status = rig.admin("GET", "/v1/status")
    assert {"scope": "product", "key": "m", "mode": "close_only"} in status["kills"]
    await click(d, "#kills li[data-scope='product'] button[data-action='reset-scope']")
    await confirm_with_reason(d, "market calm again")
    await until(d, text_of("#kills li", "No scope is killed."))
    assert rig.admin("GET", "/v1/status")[1]["kills"] == []


async def test_a_viewer_sees_no_actions_and_labels_switch_language(rig: Rig,
                                                                   browser: Any) -> None:
    d = browser
    await login(d, rig, VIEWER)
    assert css(d, "#who")[0].text == "desk-viewer (viewer)"
    assert not css(d, ".action"), "a viewer gets no action buttons"
    assert not css(d, "#scope-actions")
    await click(d, "tr[data-account='A001']")
    await until(d, lambda dr: css(dr, "#counters tbody tr[data-limit='open_orders']"))
    assert not css(d, ".action") and not css(d, "#limit-form")
    assert not css(d, "button[data-action]")
    # Bilingual labels: 中文 and back.
    await click(d, "#back")
    await click(d, "#lang-toggle")
    await until(d, text_of("#dashboard h2[data-i18n='accounts']", "账户"))
    await until(d, text_of("#accounts thead th", "账户"))
    await click(d, "#lang-toggle")
    await until(d, text_of("#dashboard h2[data-i18n='accounts']", "Accounts"))
    # The server enforces the role whatever a page shows.
    code, _ = rig.admin("POST", "/v1/kill", {"scope": "account", "key": "A001", "reason": "x"})
    assert code == 403
