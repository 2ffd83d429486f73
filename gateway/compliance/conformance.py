"""Does each account still trade as its programmatic-trading report says? (art. 11)

Theory of operation
-------------------
The router tells ``Conformance.message`` of every order the engine decided and every cancel it
counted (``Router.on_counted``: account, time, reason), live and on replay, so the counters
here are rebuilt by a restart exactly as the engine's are. A report needs correction when:

- an account that is not registered (no report submitted or confirmed, no configured
  registration) shows programmatic behaviour: ``occasions`` seconds in a trading day with
  ``per_sec`` or more orders + cancels (default 10 x 10, the rules' standard), counted over
  the account alone *and* over its account group (实际控制关系: related accounts count
  together, so splitting a flow across them does not hide it);
- an account with a confirmed HFT report sends more orders + cancels in a second, or in a
  day, than it reported (cancels are never refused, so this can happen even though the
  engine refuses orders at the reported figures);
- the engine refuses an order for the HFT standard or the reported maxima (802, 803, 804):
  the account tried to trade faster than its report allows.

Only the accounts that can produce a finding are counted (``refresh``): registered accounts
outside a group with an unregistered member, and without an HFT report, cost one set lookup.

A finding goes to ``Registry.flag`` — live only: on replay the journaled ``registry_flag``
action restores it — which journals it, alerts 1314 and starts the grace period. Each window
is exact and O(1) a message: the k-th most recent time decides (``checks.state.recent``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

from checks.calendar import trading_day_bounds, trading_day_number
from checks.model import RiskConfig
from checks.reasons import Reason
from checks.state import recent
from gateway.compliance.registry import Registry

NS = 1_000_000_000
HFT_REFUSALS = frozenset({int(Reason.HFT_UNREGISTERED), int(Reason.HFT_DIRECT_ACCESS),
                          int(Reason.HFT_LIMIT)})


class _Window:
    """Orders + cancels of an account or a group today: the occasions standard."""

    __slots__ = ("times", "occasions")

    def __init__(self, per_sec: int) -> None:
        self.times: deque[int] = deque(maxlen=max(per_sec, 1))
        self.occasions = 0


class Conformance:
    def __init__(self, registry: Registry, risk: RiskConfig, router: Any, *,
                 per_sec: int = 10, occasions: int = 10) -> None:
        self.registry = registry
        self.router = router
        self.per_sec = per_sec
        self.occasions = occasions
        self.boundary = risk.day_boundary_s
        self.group_of = {a.id: a.group for a in risk.accounts}
        self.members: dict[str, list[str]] = {}
        for a in risk.accounts:
            self.members.setdefault(a.group, []).append(a.id)
        self.day_end = -1
        self.accounts: dict[str, _Window] = {}
        self.groups: dict[str, _Window] = {}
        self.active: dict[str, set[str]] = {}  # group -> accounts that sent something today
        self.hft: dict[str, tuple[int, int, deque[int]]] = {}  # account -> (per_sec, day, times)
        self.day_count: dict[str, int] = {}
        self.watched: frozenset[str] = frozenset()
        registry.on_apply = self.refresh
        self.refresh()

    def refresh(self) -> None:
        """Which accounts are counted: the unregistered ones, every member of a group with an
        unregistered member, and those with a confirmed HFT report. Every other account's
        message costs one set lookup (the order path's budget). Called whenever a registration
        can change — a registry step, a checkpoint restored, a registration set by an operator
        (live and on replay) — so the set is a function of journaled state and a replay counts
        what the live gateway counted."""
        unregistered = {a for a in self.group_of if not self.registry.registered(a)}
        watched = set(unregistered)
        for members in self.members.values():
            if len(members) > 1 and not unregistered.isdisjoint(members):
                watched.update(members)
        watched.update(a for a in self.group_of if self.registry.reported_hft(a) is not None)
        self.watched = frozenset(watched)

    def _roll(self, now: int) -> None:
        day = trading_day_number(now, self.boundary)
        self.day_end = trading_day_bounds(day, self.boundary)[1]
        self.accounts.clear()
        self.groups.clear()
        self.active.clear()
        self.hft.clear()
        self.day_count.clear()

    def message(self, account: str, now: int, reason: int) -> None:
        """One order decided (``reason`` its verdict) or one cancel counted (reason 0)."""
        if reason:
            if reason in HFT_REFUSALS:
                self._finding(account, now, f"an order was refused for trading faster than "
                              f"{'its report allows' if reason == Reason.HFT_LIMIT else 'the HFT standard'}"
                              f" ({Reason(reason).name})")
            return
        if account not in self.watched:
            return
        group = self.group_of[account]
        if now >= self.day_end:
            self._roll(now)
        self.active.setdefault(group, set()).add(account)
        if self._count(self.accounts, account, now):
            self._programmatic([account], now, f"{self.occasions} seconds today with >= "
                               f"{self.per_sec} orders+cancels")
        if len(self.members[group]) > 1 and self._count(self.groups, group, now):
            self._programmatic(sorted(self.active[group]), now,
                               f"{self.occasions} seconds today with >= {self.per_sec} "
                               f"orders+cancels over its account group {group} (related "
                               "accounts count together)")
        count = self.day_count[account] = self.day_count.get(account, 0) + 1
        hft = self.registry.reported_hft(account)
        if hft is not None:
            held = self.hft.get(account)
            if held is None or held[0] != hft.max_per_sec:
                held = self.hft[account] = (hft.max_per_sec, hft.max_per_day,
                                            deque(maxlen=hft.max_per_sec + 1))
            times = held[2]
            times.append(now)
            if recent(times, hft.max_per_sec + 1, now, NS):
                self._finding(account, now, f"more than the reported {hft.max_per_sec} "
                              "orders+cancels in one second")
            elif count > hft.max_per_day:
                self._finding(account, now, f"more than the reported {hft.max_per_day} "
                              "orders+cancels today")

    def _count(self, table: dict[str, _Window], key: str, now: int) -> bool:
        """Count a message; True when it completes the day's ``occasions``-th busy second."""
        w = table.get(key)
        if w is None:
            w = table[key] = _Window(self.per_sec)
        before = recent(w.times, self.per_sec, now, NS)
        w.times.append(now)
        if not before and recent(w.times, self.per_sec, now, NS):
            w.occasions += 1
            return w.occasions == self.occasions
        return False

    def _programmatic(self, accounts: list[str], now: int, detail: str) -> None:
        for account in accounts:
            if not self.registry.registered(account):
                self._finding(account, now, "trades programmatically without a report: "
                              + detail)

    def _finding(self, account: str, now: int, detail: str) -> None:
        if self.router.replaying:
            return  # the journaled registry_flag that followed restores it
        self.registry.flag(account, detail, now, self.router)
