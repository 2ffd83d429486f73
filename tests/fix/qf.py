"""A real QuickFIX 1.16 initiator (the ``quickfix`` module of the ``quickfix-tls`` wheel),
driven from tests: its settings are written to a temporary directory, every message it receives
is queued as a {tag: value} dict, and the test waits on those queues (never on a clock)."""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Any

import quickfix as fix

T = 15.0  # seconds: generous for a loaded 2-core machine (never asserted on)
SOH = "\x01"
# QuickFIX's C++ side keeps pointers to the Python application and initiator: freeing them
# while its threads wind down crashes the process, so every one lives as long as the tests.
_KEEP: list[Any] = []


def as_dict(message: Any) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in message.toString().split(SOH):
        if "=" in part:
            tag, _, value = part.partition("=")
            out.setdefault(int(tag), value)
    return out


class App(fix.Application):
    def __init__(self, username: str, password: str) -> None:
        super().__init__()
        self.username, self.password = username, password
        self.app: queue.Queue[dict[int, str]] = queue.Queue()
        self.admin: queue.Queue[dict[int, str]] = queue.Queue()
        self.logged_on = threading.Event()
        self.logged_out = threading.Event()
        self.session_id: Any = None

    def onCreate(self, sessionID: Any) -> None:  # noqa: N802 - QuickFIX's names
        self.session_id = sessionID

    def onLogon(self, sessionID: Any) -> None:  # noqa: N802
        self.logged_out.clear()
        self.logged_on.set()

    def onLogout(self, sessionID: Any) -> None:  # noqa: N802
        self.logged_on.clear()
        self.logged_out.set()

    def toAdmin(self, message: Any, sessionID: Any) -> None:  # noqa: N802
        if message.getHeader().getField(35) == "A":
            message.setField(553, self.username)
            message.setField(554, self.password)

    def fromAdmin(self, message: Any, sessionID: Any) -> None:  # noqa: N802
        self.admin.put(as_dict(message))

    def toApp(self, message: Any, sessionID: Any) -> None:  # noqa: N802
        pass

    def fromApp(self, message: Any, sessionID: Any) -> None:  # noqa: N802
        self.app.put(as_dict(message))


class Initiator:
    """One QuickFIX session to the gateway's FIX port."""

    def __init__(self, directory: Path, port: int, sender: str = "ALGO1", target: str = "FENGKONG",
                 username: str = "algo1", password: str = "algo-secret", heartbeat: int = 30,
                 reset: bool = False, extra: str = "", tls: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        cfg = directory / "initiator.cfg"
        cfg.write_text(
            "[DEFAULT]\nConnectionType=initiator\nReconnectInterval=1\n"
            f"FileStorePath={directory / 'store'}\nFileLogPath={directory / 'log'}\n"
            "StartTime=00:00:00\nEndTime=00:00:00\nUseDataDictionary=N\n"
            f"HeartBtInt={heartbeat}\nSocketConnectHost=127.0.0.1\nSocketConnectPort={port}\n"
            f"ResetOnLogon={'Y' if reset else 'N'}\n{extra}"
            f"[SESSION]\nBeginString=FIX.4.4\nSenderCompID={sender}\nTargetCompID={target}\n")
        self.app = App(username, password)
        self.settings = fix.SessionSettings(str(cfg))
        kind = fix.SSLSocketInitiator if tls else fix.SocketInitiator
        self.initiator = kind(self.app, fix.FileStoreFactory(self.settings), self.settings,
                              fix.FileLogFactory(self.settings))
        self.started = False
        _KEEP.append(self)

    def start(self, wait_logon: bool = True) -> Initiator:
        self.initiator.start()
        self.started = True
        if wait_logon:
            assert self.app.logged_on.wait(T), f"no logon; admin: {self.drain_admin()}"
        return self

    def stop(self, graceful: bool = False) -> None:
        if self.started:
            # graceful: QuickFIX sends Logout and waits for the answer (it polls each second,
            # so only the test of the handshake asks for it).
            self.initiator.stop(not graceful)
            self.started = False
        # Destroying the initiator unregisters its session (the application lives on in
        # _KEEP): a later initiator of the same CompIDs must not find this one's session.
        self.initiator = None

    def events(self) -> str:
        return "".join(f.read_text() for f in (self.directory / "log").glob("*.event.*"))

    def seqnums(self) -> tuple[int, int]:
        """(next MsgSeqNum it sends, next it expects), from its file store."""
        f = next((self.directory / "store").glob("*.seqnums"))
        a, _, b = f.read_text().partition(":")
        return int(a), int(b)

    def set_seqnums(self, sender: int, target: int) -> None:
        """Before ``start``: make it come back with these numbers (its store's file)."""
        f = next((self.directory / "store").glob("*.seqnums"))
        f.write_text(f"{sender:020d} : {target:020d}")

    @property
    def session(self) -> Any:
        return fix.Session.lookupSession(self.app.session_id)

    def send(self, msg_type: str, fields: list[tuple[int, str]]) -> None:
        m = fix.Message()
        m.getHeader().setField(35, msg_type)
        for tag, value in fields:
            m.setField(tag, str(value))
        assert fix.Session.sendToTarget(m, self.app.session_id)

    def order(self, clid: str, account: str = "A001", symbol: str = "rb2605", side: str = "1",
              price: float | None = 3200.0, qty: int = 1, ord_type: str = "2",
              extra: list[tuple[int, str]] = ()) -> None:
        fields = [(11, clid), (1, account), (55, symbol), (54, side), (38, str(qty)),
                  (40, ord_type), (60, "20260101-00:00:00.000")]
        if price is not None:
            fields.append((44, f"{price:g}"))
        self.send("D", fields + list(extra))

    def next_app(self, pred: Any = None, timeout: float = T) -> dict[int, str]:
        """The next application message (matching ``pred``, others skipped)."""
        while True:
            m = self.app.app.get(timeout=timeout)
            if pred is None or pred(m):
                return m

    def report(self, clid: str, exec_type: str | None = None) -> dict[int, str]:
        return self.next_app(lambda m: m.get(35) == "8" and m.get(11) == clid
                             and (exec_type is None or m.get(150) == exec_type))

    def next_admin(self, msg_type: str, timeout: float = T) -> dict[int, str]:
        while True:
            m = self.app.admin.get(timeout=timeout)
            if m.get(35) == msg_type:
                return m

    def drain_admin(self) -> list[dict[int, str]]:
        out = []
        while not self.app.admin.empty():
            out.append(self.app.admin.get_nowait())
        return out
