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

The web console (``gateway.console``) adds its page at ``/console/`` and the reads it needs:
``/v1/whoami``, ``/v1/events`` (the live view, Server-Sent Events), ``/v1/accounts/{id}/usage``
and ``/v1/audit`` (admin actions from the journal, newest first, paged).

Answers are JSON, errors too: ``{"error": "..."}`` with 400 for a malformed request (a bad
scope names the allowed ones), 404 for an unknown account or key, and for an unknown route
(with its ``"path"``), 409 for a change that does not apply (``reset`` of a scope that is not
killed: ``"changed": false``, nothing journaled).

Money is in yuan everywhere, as numbers rounded to the fen (2 decimals): account funds,
position cost, margin and unrealised P&L, and limits (``max_notional``, ``loss_limit``). Every change is
journaled and logged with the operator's identity (``KillSwitch._audit``).

Request bodies are decoded once, at the edge, into the typed structs below, with the config
file's own checks for limits (``checks.config.merge_limits``: types, ranges, unknown names): an
unknown field, a wrong type, a negative or out-of-range number, or NaN/Infinity (not JSON,
though Python's ``json`` module takes them) gets a 400 naming the field and what was expected,
and changes nothing. A limit change applies as a whole or not at all.

Change control (security rules art. 15): tightening, killing and close-only are always
allowed; loosening while any instrument's trading session is open requires
``"emergency": true`` and a ``"reason"`` (else 409). Loosening is: a looser limit, returning an
account towards ACTIVE (SUSPENDED -> CLOSE_ONLY -> ACTIVE), and raising a programmatic
registration (NONE -> REPORTED -> CONFIRMED). Every applied change is journaled with the
operator, the reason and the emergency flag as given, and replayed at a restart.

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
    GET|POST /v1/registry...              the programmatic-trading registry
                                          (gateway.compliance.registry_admin)
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import msgspec
import structlog
from aiohttp import web

from checks.calendar import session_open
from checks.config import ConfigError, merge_limits
from checks.enums import AccountStatus, KillScope, ProgReg
from checks.model import ProgRegName, StatusName
from gateway.auth import verify_token
from gateway.killswitch import KillError, parse_scope
from gateway.tls import ServerTls, TlsServer, create_server

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


LINK_STATES = ("up", "down", "taken over")  # gateway.exchange_link.ExchangeLink.state


class AdminError(Exception):
    def __init__(self, status: int, text: str, **extra: Any) -> None:
        super().__init__(text)
        self.status = status
        self.extra = extra


# ---------------------------------------------------------------------- request bodies
T = TypeVar("T")
ReasonText = Annotated[str, msgspec.Meta(max_length=1000)]  # for people: a few lines at most
KeyText = Annotated[str, msgspec.Meta(max_length=200)]


class _Request(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, frozen=True):
    pass


class KillRequest(_Request):
    scope: str
    key: KeyText | int = ""
    reason: ReasonText = ""
    close_only: bool = False


class ResetRequest(_Request):
    scope: str
    key: KeyText | int = ""
    reason: ReasonText = ""


class StatusRequest(_Request):
    status: StatusName
    reason: ReasonText = ""
    emergency: bool = False


class ProgrammaticRequest(_Request):
    registration: ProgRegName = "CONFIRMED"
    reason: ReasonText = ""
    emergency: bool = False


class LimitsRequest(_Request):
    # Each value is decoded on its own, so that a bad one (e.g. 1e999) is named; then the whole
    # set goes through the config file's checks (``merge_limits``).
    limits: dict[str, msgspec.Raw]
    reason: ReasonText = ""
    emergency: bool = False


class _NotJson:
    """What Python's ``json`` makes of NaN / Infinity: found only to name the field."""

    def __init__(self, text: str) -> None:
        self.text = text


def _not_json(data: bytes, err: Exception) -> AdminError:
    try:
        loose = json.loads(data, parse_constant=_NotJson)
    except ValueError:
        return AdminError(400, f"the request body is not JSON: {err}")
    path = _find_not_json(loose, "")
    if path is not None:
        field, text = path
        return AdminError(400, f"{field}: expected a finite number, got {text} (NaN and "
                               "Infinity are not JSON)", field=field)
    return AdminError(400, f"the request body is not JSON: {err}")


def _find_not_json(value: Any, at: str) -> tuple[str, str] | None:
    if isinstance(value, _NotJson):
        return at or "$", value.text
    items = value.items() if isinstance(value, dict) else \
        enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found = _find_not_json(v, f"{at}.{k}" if at and isinstance(k, str) else
                               f"{at}[{k}]" if at else str(k))
        if found is not None:
            return found
    return None


def _invalid(type_: Any, err: msgspec.ValidationError) -> AdminError:
    """A 400 naming the field and what was expected."""
    text, _, at = str(err).partition(" - at `")
    path = at.rstrip("`").removeprefix("$").removeprefix(".")
    fields = getattr(type_, "__struct_fields__", ())
    if text.startswith("Object contains unknown field `"):
        name = text.removeprefix("Object contains unknown field `").rstrip("`")
        field = f"{path}.{name}" if path else name
        return AdminError(400, f"{field}: unknown field; expected one of: {', '.join(fields)}",
                          field=field)
    if text.startswith("Object missing required field `"):
        name = text.removeprefix("Object missing required field `").rstrip("`")
        field = f"{path}.{name}" if path else name
        return AdminError(400, f"{field}: required", field=field)
    if text.startswith("Invalid enum value") and path in fields:
        info = next(f for f in msgspec.inspect.type_info(type_).fields if f.name == path)
        if isinstance(info.type, msgspec.inspect.LiteralType):
            text += f"; expected one of {', '.join(map(repr, info.type.values))}"
    if not path:
        return AdminError(400, f"the request body: {text}")
    return AdminError(400, f"{path}: {text}", field=path)


class AdminApi:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.operators = gw.cfg.operators
        self.app = web.Application(middlewares=[self._write_ahead, self._errors])
        r = self.app.router
        from gateway import console  # the web console's page and the reads it needs

        self.console = console.register(self)
        r.add_get("/v1/status", self.status)
        r.add_get("/v1/accounts", self.accounts)
        r.add_get("/v1/accounts/{id}", self.account)
        r.add_get("/v1/orders", self.orders)
        r.add_get("/v1/alerts", self.alerts)
        r.add_get("/v1/recovery", self.recovery)
        r.add_get("/v1/link", self.link)
        r.add_post("/v1/kill", self.kill)
        r.add_post("/v1/reset", self.reset)
        r.add_post("/v1/accounts/{id}/status", self.set_status)
        r.add_post("/v1/accounts/{id}/programmatic", self.set_programmatic)
        r.add_post("/v1/accounts/{id}/limits", self.set_limits)
        r.add_post("/v1/link/reconnect", self.link_reconnect)
        r.add_post("/v1/users/{name}/unlock", self.unlock_user)
        gw.metrics.add_routes(self.app, self._operator)  # /metrics, /healthz, /readyz
        from gateway.compliance.registry_admin import register_routes

        register_routes(self.app, gw, self._operator, self._decode,  # /v1/registry...
                        self._change_control)
        self.runner: web.AppRunner | None = None
        self.tls_server: TlsServer | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        cfg = self.gw.cfg
        tls = ServerTls.optional(cfg.admin.tls, {o.name for o in self.operators}, cfg.source,
                                 "admin.tls")
        if tls is not None:  # HTTPS through the acceptor: a plaintext caller is logged, refused
            assert self.runner.server is not None
            self.tls_server = await create_server(self.runner.server, host, port, tls, what="admin")
            self.port = self.tls_server.sockets[0].getsockname()[1]
            return
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self.tls_server is not None:
            self.tls_server.close()
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

    def authorize(self, request: web.Request, need: str) -> str:
        """The operator a request's token belongs to, if its role is at least ``need`` (else
        401/403): for the routes other modules add to this plane (``gateway.console``)."""
        return self._operator(request, need)

    async def _decode(self, request: web.Request, type_: type[T]) -> T:
        """The body as ``type_``, or a 400 naming the field (an empty body is ``{}``)."""
        data = await request.read()
        try:
            return msgspec.json.decode(data or b"{}", type=type_)
        except msgspec.ValidationError as err:
            raise _invalid(type_, err) from None
        except msgspec.DecodeError as err:
            raise _not_json(data, err) from None

    async def _body(self, request: web.Request, schema: type | None = None) -> dict[str, Any]:
        """The body as a dict, for handlers that read it by name: checked against ``schema``
        (a ``_Request`` struct) when given, else any JSON object; decoded as ``_decode`` does."""
        if schema is not None:
            return msgspec.structs.asdict(await self._decode(request, schema))
        return await self._decode(request, dict[str, Any])

    def _role(self, operator: str) -> int:
        return ROLES[next(o.role for o in self.operators if o.name == operator)]

    def _change_control(self, what: str, emergency: bool, reason: str) -> None:
        """Loosening while a trading session is open: only in an emergency, with a reason."""
        if self.gw.session_open() and not (emergency and reason.strip()):
            raise AdminError(409, f"{what} while a trading session is open needs "
                                  "\"emergency\": true and a \"reason\" (change control, security "
                                  "rules art. 15)")

    def _account_state(self, account: str) -> dict[str, Any]:
        try:
            return self.gw.engine.account_view(account)
        except KeyError:
            raise AdminError(404, f"unknown account {account!r}") from None

    # ------------------------------------------------------------------ reads
    async def status(self, request: web.Request) -> web.Response:
        self._operator(request, "viewer")
        return web.json_response(self.gw.status())

    async def link(self, request: web.Request) -> web.Response:
        """The exchange link's state; with ``?wait=STATE&timeout_s=N`` (N <= 60) it answers when
        the link reaches STATE, or 408 after N seconds — scripts and tests wait on the change
        itself instead of polling."""
        self._operator(request, "viewer")
        link = self.gw.link
        wanted = request.query.get("wait")
        if wanted is not None:
            if wanted not in LINK_STATES:
                raise AdminError(400, f"wait: {wanted!r} is not a link state; expected one of "
                                 f"{', '.join(LINK_STATES)}", field="wait")
            try:
                timeout = float(request.query.get("timeout_s", "10"))
            except ValueError:
                timeout = -1.0
            if not 0 <= timeout <= 60:  # NaN fails this too
                raise AdminError(400, "timeout_s: expected a number of seconds from 0 to 60",
                                 field="timeout_s")
            try:
                await link.wait_state(wanted, timeout)
            except TimeoutError:
                raise AdminError(408, f"the exchange link is {link.state!r}, not {wanted!r}, "
                                 f"after {timeout:g} s", exchange_link=link.state) from None
        return web.json_response({"exchange_link": link.state})

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
        body = await self._body(request, KillRequest)
        scope, _ = self._scope(body)
        result = self.gw.killswitch.kill(scope, str(body.get("key", "")),
                                         operator=op, reason=str(body.get("reason", "")),
                                         close_only=bool(body.get("close_only", False)))
        return web.json_response(msgspec.structs.asdict(result))

    async def reset(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        body = await self._body(request, ResetRequest)
        scope, key = self._scope(body)
        if not self._is_killed(scope, key):
            target = "the firm" if scope == KillScope.FIRM else f"{scope.name.lower()} {key}"
            self._known(scope, key)
            raise AdminError(409, f"{target} was not killed; nothing changed", changed=False)
        self.gw.killswitch.reset(scope, key, operator=op, reason=str(body.get("reason", "")))
        return web.json_response({"ok": True, "changed": True})

    async def set_status(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        req = await self._decode(request, StatusRequest)
        account = request.match_info["id"]
        current = AccountStatus[self._account_state(account)["status"]]
        status = AccountStatus[req.status]
        looser = status < current  # ACTIVE < CLOSE_ONLY < SUSPENDED
        if looser:
            self._change_control(f"setting account {account} {status.name} (from "
                                 f"{current.name})", req.emergency, req.reason)
        sent = self.gw.killswitch.set_status(account, status, operator=op, reason=req.reason,
                                             emergency=req.emergency)
        return web.json_response({"ok": True, "cancels_sent": sent, "looser": looser})

    async def set_programmatic(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        req = await self._decode(request, ProgrammaticRequest)
        account = request.match_info["id"]
        current = ProgReg[self._account_state(account)["programmatic"]]
        registration = ProgReg[req.registration]
        looser = registration > current  # NONE < REPORTED < CONFIRMED
        if looser:
            self._change_control(f"raising account {account}'s programmatic registration to "
                                 f"{registration.name} (from {current.name})", req.emergency,
                                 req.reason)
        # Journaled before it takes effect, like every change (write-ahead).
        self.gw.killswitch.audit(op, "set_programmatic", KillScope.ACCOUNT, account, req.reason,
                                  time.time_ns(), emergency=req.emergency,
                                  registration=registration.name)
        self.gw.engine.set_programmatic(account, registration)
        self.gw.conformance.refresh()  # which accounts the registry's watch counts
        return web.json_response({"ok": True, "looser": looser})

    async def set_limits(self, request: web.Request) -> web.Response:
        op = self._operator(request, "risk")
        req = await self._decode(request, LimitsRequest)
        account = request.match_info["id"]
        if account not in self.gw.limits:
            raise AdminError(404, f"unknown account {account!r}")
        if not req.limits:
            raise AdminError(400, "limits: expected a non-empty object of limit names to values",
                             field="limits")
        changes: dict[str, Any] = {}
        for name, raw in req.limits.items():
            try:
                changes[name] = msgspec.json.decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as err:
                raise AdminError(400, f"limits.{name}: {err}", field=f"limits.{name}") from None
        current = self.gw.limits[account]
        try:  # the config file's own checks, on the limits as they would be: all or nothing
            new = merge_limits(current, changes, "request", "limits")
        except ConfigError as err:
            raise AdminError(400, f"{err.path}: {err.problem}", field=err.path) from None
        applied = {k: getattr(new, k) for k in changes}  # as typed (e.g. 5 -> 5.0 for money)
        looser = sorted(k for k, v in applied.items() if is_looser(k, getattr(current, k), v))
        if looser:
            if self._role(op) < ROLES["admin"]:
                raise AdminError(403, f"loosening {', '.join(looser)} needs the admin role")
            self._change_control(f"loosening {', '.join(looser)}", req.emergency, req.reason)
        self.gw.killswitch.audit(op, "set_limits", KillScope.ACCOUNT, account, req.reason,
                                  time.time_ns(), emergency=req.emergency, changes=applied,
                                  looser=looser)
        try:
            self.gw.engine.set_limits(account, new)
        except Exception:
            self.gw.engine.set_limits(account, current)  # all or nothing, even here
            raise
        self.gw.limits[account] = new
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
