"""Terminal information (穿透式监管): which application, on which terminal, sent each order.

Theory of operation
-------------------
A relay between clients and the exchange must let the exchange see through it to the client's
own terminal. The client's ``Logon`` carries its application id and auth code and what it
collected about its terminal (``gateway.protocol.TerminalData``: IP, MAC, device, OS, ...);
all optional, so older clients still log on.

At logon (``gateway.session``):

1. the fields are bounded (``protocol.terminal_problem``) before anything else: too long is
   ``LogonReject`` 111 TERMINAL_INFO_INVALID, naming the field;
2. after the secret, a user with registered applications (``[[users.apps]]``: app id -> auth
   code hashed like a secret) must name one with its auth code (``check_application``): else
   ``LogonReject`` 110 APP_NOT_REGISTERED — counted as a failed logon, since an auth code is a
   credential; a user without registered applications is not asked;
3. the Logon is journaled with its terminal information and application id (never the auth
   code or the secret), so the audit trail says who traded from where;
4. once logged on, ``TerminalRelay.logon`` sends a ``TerminalInfo`` message for the session
   to the exchange link, with the address the gateway saw the client connect from. The link
   may be down: every live session's ``TerminalInfo`` is sent again whenever the link comes
   up (``TerminalRelay.link_up``), so the exchange hears of every session on every connection.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from gateway.protocol import Logon, TerminalData, TerminalInfo

if TYPE_CHECKING:
    from gateway.config import UserConfig
    from gateway.router import Router

log = structlog.get_logger("fengkong.terminal")


async def check_application(guard: Any, user: UserConfig, msg: Logon) -> bool:
    """Whether ``msg`` names one of ``user``'s registered applications with its auth code
    (True for a user with none). The code is verified on the logon hashing pool, and a dummy
    hash is verified for an unknown app id, so the answer takes as long either way."""
    if not user.apps:
        return True
    app = next((a for a in user.apps if a.app_id == msg.app_id), None)
    ok = await guard.verify(app.auth_code_hash if app is not None else guard.dummy_hash,
                            msg.auth_code)
    return app is not None and ok and bool(msg.app_id)


def journaled_logon(msg: Logon) -> Logon:
    """The Logon as the journal keeps it: no secret, no auth code."""
    return Logon(msg.user, "***", msg.accounts, msg.heartbeat_s, msg.cancel_on_disconnect,
                 msg.app_id, "***" if msg.auth_code else "", msg.terminal)


class TerminalRelay:
    """Relays each live session's terminal information to the exchange link."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.infos: dict[int, TerminalInfo] = {}  # by session; only live sessions are kept
        self.sent = 0

    def logon(self, session: Any, msg: Logon, now: int | None = None) -> None:
        now = time.time_ns() if now is None else now
        info = TerminalInfo(session.session_id, session.user, msg.app_id,
                            str(getattr(session, "peer", "")), msg.terminal or TerminalData(),
                            sorted(session.accounts), now)
        self._forget_closed()
        self.infos[session.session_id] = info
        self._send(info)

    def link_up(self) -> int:
        """The link is (back) up: the exchange hears of every live session again."""
        self._forget_closed()
        for info in list(self.infos.values()):
            self._send(info)
        return len(self.infos)

    def _forget_closed(self) -> None:
        live = self.router.sessions
        for sid in [sid for sid in self.infos if sid not in live]:
            del self.infos[sid]

    def _send(self, info: TerminalInfo) -> None:
        link = self.router.link
        if not self.router.cfg.exchange.relay_terminal_info:
            return
        if self.router.replaying or link is None or not link.up:
            return  # sent when the link comes up
        if link.send(info):
            self.sent += 1
            log.info("terminal information relayed", session=info.session_id, user=info.user,
                     app_id=info.app_id, peer=info.peer)
