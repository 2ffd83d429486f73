"""The admin plane: an HTTP/JSON API for risk officers, on its own port, never the client port.

Every request carries ``Authorization: Bearer <token>``; tokens map to operators with a role:

=========  ==================================================================================
viewer     read status: accounts, positions, funds, open orders, counters, kills, alerts
risk       + kill / reset any scope, set account status, confirm a programmatic registration,
           *tighten* a limit
admin      + loosen a limit (while a session is open: only with ``emergency`` and a reason)
=========  ==================================================================================

A missing or unknown token gets 401, a role too low 403; both are logged. The scheme name is
case-insensitive (RFC 7235): ``bearer`` works as well as ``Bearer``.

Answers are JSON, errors too: ``{"error": "..."}`` with 400 for a malformed request (a bad
scope names the allowed ones), 404 for an unknown account or key, and for an unknown route
(with its ``"path"``), 409 for a change that does not apply (``reset`` of a scope that is not
killed: ``"changed": false``, nothing journaled).

Money is in yuan everywhere, as numbers rounded to the fen (2 decimals): account funds,
position cost, margin and unrealised P&L, and limits (``max_notional``, ``loss_limit``). Every change is
journaled and logged with the operator's identity (``KillSwitch._audit``).

Change control (security rules art. 15): tightening, killing and close-only are always
allowed; loosening a limit while any instrument's trading session is open requires
``"emergency": true`` and a ``"reason"``.

Endpoints (JSON bodies; see the README for curl examples)::

    GET  /v1/status                       firm summary, link, sessions, kills, alerts
    GET  /v1/accounts                     every account's funds and counters
    GET  /v1/accounts/{id}                one account, with positions and open orders
    GET  /v1/orders[?account=A]           working orders
    GET  /v1/alerts[?limit=N]             recent alerts
    GET  /v1/recovery                     what the last start rebuilt; journal damage, safe mode
    POST /v1/kill    {scope, key, reason, close_only}
    POST /v1/reset   {scope, key, reason}
    POST /v1/accounts/{id}/status        {status, reason}
    POST /v1/accounts/{id}/programmatic  {registration, reason}
    POST /v1/accounts/{id}/limits        {limits: {...}, reason, emergency}
    POST /v1/link/reconnect  {reason}    try the exchange seat again after it was taken over
    POST /v1/users/{name}/unlock  {reason}  lift a client user's failed-logon lockout
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from aiohttp import web

from checks.calendar import session_open
from checks.enums import KillScope, ProgReg
from checks.model import Limits
from gateway.auth import verify_token
from gateway.killswitch import KillError, parse_scope

if TYPE_CHECKING:
    from gateway.server import Gateway

log = structlog.get_logger("fengkong.admin")
ROLES = {"viewer": 1, "risk": 2, "admin": 3}

# For each limit: +1 when a bigger value is looser, -1 when a smaller value is looser.
_LOOSER_WHEN = {
    "otr_min_messages": +1, "message_fee_free": +1, "programmatic_per_sec": +1,
    "programmatic_occasions": +1, "warn_fraction": +1, "repeat_window_ms": -1,
    "execution_window_ms": -1, "stop_unregistered_programmatic": -1, "message_fee": -1,
}


def is_looser(name: str, old: Any, new: Any) -> bool:
    if old == new:
        return False
    if name.startswith("max_") or name == "loss_limit":
        if new is None:
            return True
        if old is None:
            return False
        return new > old
    direction = _LOOSER_WHEN.get(name, +1)
    return (new > old) if direction > 0 else (new < old)


class AdminError(Exception):
    def __init__(self, status: int, text: str, **extra: Any) -> None:
        super().__init__(text)
        self.status = status
        self.extra = extra


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.operators = gw.cfg.operators
        self.app = web.Application(middlewares=[self._write_ahead, self._errors])
        r = self.app.router
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/accounts", self.accounts)
        r.add_get("/v1/accounts/{id}", self.account)
        r.add_get("/v1/orders", self.orders)
        r.add_get("/v1/alerts", self.alerts)
        r.add_get("/v1/recovery", self.recovery)
        r.add_post("/v1/kill", self.kill)
        r.add_post("/v1/reset", self.reset)
        r.add_post("/v1/accounts/{id}/status", self.set_status)
        r.add_post("/v1/accounts/{id}/programmatic", self.set_programmatic)
        r.add_post("/v1/accounts/{id}/limits", self.set_limits)
        r.add_post("/v1/link/reconnect", self.link_reconnect)
        r.add_post("/v1/users/{name}/unlock", self.unlock_user)
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # ------------------------------------------------------------------ auth and errors
    @web.middleware
    async def _write_ahead(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """An action is journaled before anyone hears it was done: the batch its records joined
        is written before the response leaves (client sockets do the same in their writes)."""
        response = await handler(request)
        audit = self.gw.router.audit
        if audit is not None:
            audit.flush()
        return response

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            return await handler(request)
        except AdminError as err:
            return web.json_response({"error": str(err), **err.extra}, status=err.status)
        except KillError as err:
            return web.json_response({"error": str(err)}, status=404)
        except web.HTTPException as err:  # no such route, or a method it does not take
            return web.json_response({"error": err.reason, "path": request.path},
                                     status=err.status)
        except (ValueError, msgspec.ValidationError) as err:
            return web.json_response({"error": str(err)}, status=400)

    def _operator(self, request: web.Request, need: str) -> str:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.strip().partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""  # RFC 7235: any case
        op = next((o for o in self.operators if token and verify_token(o.token_hash, token)), None)
        if op is None:
            log.warning("admin request refused: no valid token", path=request.path,
                        peer=request.remote)
            raise AdminError(401, "missing or unknown operator token (Authorization: Bearer ...)")
        if ROLES[op.role] < ROLES[need]:
            log.warning("admin request refused: role too low", operator=op.name, role=op.role,
                        need=need, path=request.path)
            raise AdminError(403, f"operator {op.name!r} has role {op.role!r}; this needs {need!r}")
        return op.name

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            raise AdminError(400, "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise AdminError(400, "the request body must be a JSON object")
        return body

    # ------------------------------------------------------------------ reads
    async def status(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        return web.json_response(self.gw.status())

    async def accounts(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        engine = self.gw.engine
        return web.json_response([engine.account_view(a.id) for a in self.gw.cfg.risk.accounts])

    async def account(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        account = request.match_info["id"]
        try:
            view = self.gw.engine.account_view(account)
        except KeyError:
            raise AdminError(404, f"unknown account {account!r}") from None
        snap = self.gw.engine.snapshot()
        view["positions"] = {sym: _position_view(t)
                             for (acc, sym), t in snap["positions"].items() if acc == account}
        view["orders"] = self.gw.router.open_order_views(account)
        view["limits"] = msgspec.structs.asdict(self.gw.limits[account])
        return web.json_response(view)

    async def orders(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        return web.json_response(self.gw.router.open_order_views(request.query.get("account")))

    async def alerts(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        limit = int(request.query.get("limit", "100"))
        alerts = list(self.gw.router.alerts)[-limit:]
        return web.json_response([msgspec.structs.asdict(a) for a in alerts])

    async def recovery(self, request: web.Request) -> web.Response:
        """What the last start rebuilt from the journal, with the book's digest at that point,
        and what it found wrong with the journal: a torn tail cut (``torn_tail``: where, and the
        file the cut bytes are kept in) or corruption (``safe_mode`` true, ``corruption``: file,
        byte offset, record sequence number, kind, the intact records after it; ``repair``:
        what a person does about it)."""
        self._operator(request, "viewer")
        rep = self.gw.recovery
        if rep is None:
            return web.json_response({"journal": False})
        state = self.gw.journal_state() or {}
        return web.json_response({"journal": True, **dataclasses.asdict(rep),
                                  **{k: state.get(k) for k in ("safe_mode", "corruption", "repair",
                                                               "torn_tail")}})

    # ------------------------------------------------------------------ changes
    def _scope(self, body: dict[str, Any]) -> tuple[KillScope, str]:
        """The body's scope, or 400: a scope name outside the set is a malformed request."""
        try:
            scope = parse_scope(str(body.get("scope", "")))
        except KillError as err:
            raise AdminError(400, str(err)) from None
        key = str(body.get("key", ""))
        if scope == KillScope.SESSION and not key.isdigit():
            raise AdminError(400, f"session ids are numbers, got {key!r}")
        return scope, ("" if scope == KillScope.FIRM else key)

    def _is_killed(self, scope: KillScope, key: str) -> bool:
        return any(s == scope and self.gw.scope_name(s, k) == key
                   for s, k, _mode in self.gw.engine.killed())

    def _known(self, scope: KillScope, key: str) -> None:
        """404 for a key the scope does not have (an account, group, instrument or product)."""
        risk = self.gw.cfg.risk
        known = {KillScope.ACCOUNT: {a.id for a in risk.accounts},
                 KillScope.GROUP: {a.group for a in risk.accounts},
                 KillScope.INSTRUMENT: {i.symbol for i in risk.instruments},
                 KillScope.PRODUCT: {i.product for i in risk.instruments}}.get(scope)
        if known is not None and key not in known:
            raise AdminError(404, f"unknown {scope.name.lower()} {key!r}")

    async def kill(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request)
        scope, _ = self._scope(body)
        result = self.gw.killswitch.kill(scope, str(body.get("key", "")),
                                         operator=op, reason=str(body.get("reason", "")),
                                         close_only=bool(body.get("close_only", False)))
        return web.json_response(msgspec.structs.asdict(result))

    async def reset(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request)
        scope, key = self._scope(body)
        if not self._is_killed(scope, key):
            target = "the firm" if scope == KillScope.FIRM else f"{scope.name.lower()} {key}"
            self._known(scope, key)
            raise AdminError(409, f"{target} was not killed; nothing changed", changed=False)
        self.gw.killswitch.reset(scope, key, operator=op, reason=str(body.get("reason", "")))
        return web.json_response({"ok": True, "changed": True})

    async def set_status(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request)
        sent = self.gw.killswitch.set_status(request.match_info["id"], str(body.get("status", "")),
                                             operator=op, reason=str(body.get("reason", "")))
        return web.json_response({"ok": True, "cancels_sent": sent})

    async def set_programmatic(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request)
        account = request.match_info["id"]
        name = str(body.get("registration", "CONFIRMED")).upper()
        if name not in ProgReg.__members__:
            raise AdminError(400, f"registration must be one of {', '.join(ProgReg.__members__)}")
        try:
            self.gw.engine.set_programmatic(account, ProgReg[name])
        except KeyError:
            raise AdminError(404, f"unknown account {account!r}") from None
        self.gw.killswitch.audit(op, "set_programmatic", KillScope.ACCOUNT, account,
                                  str(body.get("reason", "")), time.time_ns(), registration=name)
        return web.json_response({"ok": True})

    async def set_limits(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request)
        account = request.match_info["id"]
        if account not in self.gw.limits:
            raise AdminError(404, f"unknown account {account!r}")
        changes = body.get("limits")
        if not isinstance(changes, dict) or not changes:
            raise AdminError(400, "'limits' must be a non-empty object of limit names to values")
        current = self.gw.limits[account]
        merged = msgspec.structs.asdict(current)
        unknown = sorted(set(changes) - set(merged))
        if unknown:
            raise AdminError(400, f"unknown limit(s): {', '.join(unknown)}")
        merged.update(changes)
        try:
            new = msgspec.convert(merged, Limits)
        except msgspec.ValidationError as err:
            raise AdminError(400, f"invalid limit: {err}") from None
        looser = sorted(k for k, v in changes.items() if is_looser(k, getattr(current, k), v))
        reason = str(body.get("reason", ""))
        emergency = bool(body.get("emergency", False))
        if looser:
            if ROLES[next(o.role for o in self.operators if o.name == op)] < ROLES["admin"]:
                raise AdminError(403, f"loosening {', '.join(looser)} needs the admin role")
            if self.gw.session_open() and not (emergency and reason):
                raise AdminError(409, f"loosening {', '.join(looser)} while a trading session is "
                                      "open needs \"emergency\": true and a \"reason\" "
                                      "(change control, security rules art. 15)")
        self.gw.engine.set_limits(account, new)
        self.gw.limits[account] = new
        self.gw.killswitch.audit(op, "set_limits", KillScope.ACCOUNT, account, reason,
                                  time.time_ns(), changes=changes, looser=looser,
                                  emergency=emergency)
        return web.json_response({"ok": True, "looser": looser})

    async def link_reconnect(self, request: web.Request) -> web.Response:
        """Let an exchange link held down after a seat takeover try again (it takes the seat
        back, so the other holder of the seat goes down in turn): a person decides, never a loop."""
        op = self._operator(request, "risk")
        body = await self._body(request)
        link = self.gw.link
        if link.taken_over is None:
            raise AdminError(409, f"the exchange link is {link.state}, not held down by a seat "
                                  "takeover: nothing to reconnect")
        self.gw.killswitch.audit(op, "link_reconnect", KillScope.FIRM, "",
                                  str(body.get("reason", "")), time.time_ns(),
                                  seat=link.cfg.user, taken_over=link.taken_over)
        link.resume()
        return web.json_response({"ok": True, "exchange_link": "reconnecting"})

    async def unlock_user(self, request: web.Request) -> web.Response:
        """Lift a client user's failed-logon lockout, from every address (risk role; audited,
        a reason is required)."""
        op = self._operator(request, "risk")
        body = await self._body(request)
        name = request.match_info["name"]
        reason = str(body.get("reason", "")).strip()
        if name not in self.gw.cfg.users:
            raise AdminError(404, f"unknown user {name!r}")
        if not reason:
            raise AdminError(400, "give a reason: an unlock is audited")
        now = time.time_ns()
        sources = self.gw.lockout.locked_sources(name, now)
        self.gw.killswitch.audit(op, "unlock_user", KillScope.FIRM, name, reason, now,
                                  sources=sources)
        self.gw.logons.unlock(name)
        return web.json_response({"ok": True, "user": name, "unlocked": sources})


def _position_view(t: tuple) -> dict[str, Any]:
    """A position as named fields, its money in yuan (the engine keeps whole fen)."""
    view = dict(zip(_POSITION_FIELDS, t, strict=True))
    for name in _POSITION_MONEY:
        view[name] = round(view[name] / 100, 2)
    return view


_POSITION_MONEY = ("long_cost", "short_cost", "long_margin", "short_margin", "unrealised")
_POSITION_FIELDS = (
    "long_td", "long_yd", "short_td", "short_yd", "long_td_frozen", "long_yd_frozen",
    "short_td_frozen", "short_yd_frozen", "long_pending", "short_pending", "long_cost",
    "short_cost", "long_margin", "short_margin", "unrealised", "cancels", "large_cancels",
    "self_trades",
)


def any_session_open(gw: Gateway, now_ns: int) -> bool:
    if not gw.cfg.risk.enforce_hours:
        return True  # no calendar enforced: treat every moment as trading time
    return any(session_open(now_ns, s) for s in gw.cfg.risk.session_seconds.values())
