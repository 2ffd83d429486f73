"""The registry's routes on the admin plane (``gateway.admin``; the README has curl examples).

::

    GET  /v1/registry                          every account's report, console-ready
    GET  /v1/registry/export?exchange=X&format=csv|json&which=current|in_force
    GET  /v1/registry/{account}                one account
    POST /v1/registry/{account}/{step}         {report, exchange_ref, reason, emergency}
         step: draft | submit | confirm | return | change   (risk role)

Bodies are decoded at the edge into ``StepRequest`` and the report into
``registry.Report``: a bad field gets a 400 naming it (``report.hft.max_per_sec: ...``). A
step the lifecycle does not allow from the report's state is a 409 naming the state and the
steps it allows. Change control as for ``set_programmatic``: a step that loosens the live
checks (an unregistered account's first submit, a confirm that raises the registration or the
HFT maxima) needs ``"emergency": true`` and a reason while a trading session is open.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec
from aiohttp import web

from gateway.admin import AdminError, KeyText, ReasonText, _Request
from gateway.compliance.registry import (
    WHICH,
    RegistryError,
    export_csv,
    export_json,
    export_rows,
    parse_report,
)

if TYPE_CHECKING:
    from gateway.server import Gateway


class StepRequest(_Request):
    report: dict[str, Any] | None = None  # registry.Report, checked by parse_report
    exchange_ref: KeyText = ""
    reason: ReasonText = ""
    emergency: bool = False


def register_routes(app: web.Application, gw: Gateway, operator: Callable[..., str],
                    decode: Callable[..., Awaitable[Any]],
                    change_control: Callable[[str, bool, str], None]) -> None:
    """Add the registry's routes to the admin plane (one call, from ``AdminApi``), with its
    token check (``operator(request, role)``), body decoding and change control."""
    r = app.router

    def registry_error(err: RegistryError) -> AdminError:
        return AdminError(err.status, str(err), **({"field": err.field} if err.field else {}))

    async def list_all(request: web.Request) -> web.Response:
        operator(request, "viewer")
        return web.json_response(gw.registry.views(time.time_ns()))

    async def one(request: web.Request) -> web.Response:
        operator(request, "viewer")
        try:
            return web.json_response(gw.registry.view(request.match_info["account"],
                                                      time.time_ns()))
        except RegistryError as err:
            raise registry_error(err) from None

    async def export(request: web.Request) -> web.Response:
        operator(request, "viewer")
        q = request.query
        exchange = q.get("exchange", "")
        if not exchange:
            raise AdminError(400, "exchange: required, e.g. ?exchange=SHFE", field="exchange")
        fmt = q.get("format", "json")
        if fmt not in ("csv", "json"):
            raise AdminError(400, f"format: expected csv or json, got {fmt!r}", field="format")
        which = q.get("which", "current")
        if which not in WHICH:
            raise AdminError(400, f"which: expected one of {', '.join(WHICH)}, got {which!r}",
                             field="which")
        rows = export_rows(gw.registry, exchange, which)
        if fmt == "csv":
            return web.Response(text=export_csv(rows), content_type="text/csv", charset="utf-8")
        return web.json_response(export_json(rows, exchange, which))

    async def step(request: web.Request) -> web.Response:
        op = operator(request, "risk")
        req = await decode(request, StepRequest)
        account, name = request.match_info["account"], request.match_info["step"]
        try:
            report = parse_report(req.report) if req.report is not None else None
            registry = gw.registry
            registry.target(account, name)  # 404 / 409 before anything else
            if report is not None and name not in ("draft", "change"):
                raise RegistryError(400, f"report: a {name} takes no report (draft or change "
                                         "carry one)", "report")
            looser = registry.looser(account, name)
            if looser:
                change_control(f"{name} of account {account}'s report ({looser})",
                                    req.emergency, req.reason)
            registry.step(account, name, operator=op, reason=req.reason, now=time.time_ns(),
                          report=report, exchange_ref=req.exchange_ref,
                          emergency=req.emergency)
            return web.json_response({"ok": True, "looser": looser,
                                      **registry.view(account, time.time_ns())})
        except RegistryError as err:
            raise registry_error(err) from None
        except msgspec.ValidationError as err:  # pragma: no cover - parse_report names it
            raise AdminError(400, str(err)) from None

    r.add_get("/v1/registry", list_all)
    r.add_get("/v1/registry/export", export)
    r.add_get("/v1/registry/{account}", one)
    r.add_post("/v1/registry/{account}/{step}", step)
