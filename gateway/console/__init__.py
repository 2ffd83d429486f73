"""The risk officers' web console, served by the admin plane itself (no other server).

``register(api)`` adds, to the admin plane's aiohttp app:

=================================  ==============================================================
``GET /console/`` (and ``/``)      the page: plain HTML, CSS and JavaScript shipped in
                                   ``gateway/console/static`` (no build step, no CDN); no data in
                                   it, so it needs no token
``GET /v1/whoami``                 the operator and role a token belongs to (viewer): the page
                                   shows action buttons only to roles that may use them
``GET /v1/events``                 the live view, Server-Sent Events: a snapshot, then changes
                                   (``gateway.console.live``; viewer)
``GET /v1/accounts/{id}/usage``    the account's daily counters and usage against every limit
                                   (``gateway.console.views``; viewer)
``GET /v1/audit?limit&before``     admin actions from the journal, newest first, paged
                                   (``gateway.console.audit_view``; viewer)
=================================  ==============================================================

Everything the console *does* goes through the admin API's existing endpoints (kill, reset,
status, limits), so the server enforces roles and change control exactly as for curl or the
CLI; the page only chooses what to offer.

The page keeps the operator's token in ``sessionStorage`` (gone when the tab closes) and sends
it only in the ``Authorization`` header, never in a URL. Its responses carry a strict Content
Security Policy (scripts, styles and connections from this origin only; no inline script, no
framing, no form posts), and the page writes every value as text, never as HTML.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.admin import AdminError
from gateway.console import audit_view
from gateway.console.live import LiveFeed, stream
from gateway.console.views import BookIndex, account_usage, positions

if TYPE_CHECKING:
    from gateway.admin import AdminApi

STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
          ".svg": "image/svg+xml"}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; img-src 'self'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Console:
    def __init__(self, api: AdminApi) -> None:
        self.api = api
        self.gw = api.gw
        self.feed = LiveFeed(api.gw)
        journal = api.gw.journal
        self.audit = audit_view.JournalAudit(journal.directory) if journal is not None else None
        # The files are read once: the page is a few tens of KB and never changes at run time.
        self.files = {p.name: (p.read_bytes(), _TYPES[p.suffix])
                      for p in STATIC.iterdir() if p.suffix in _TYPES}

    async def page(self, request: web.Request) -> web.Response:
        name = request.match_info.get("name") or "index.html"
        found = self.files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, ctype = found
        return web.Response(body=body, content_type=ctype, charset="utf-8",
                            headers=SECURITY_HEADERS)

    async def root(self, request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/console/"})

    async def whoami(self, request: web.Request) -> web.Response:
        name = self.api.authorize(request, "viewer")
        role = next(o.role for o in self.api.operators if o.name == name)
        return web.json_response({"operator": name, "role": role,
                                  "gateway": self.gw.cfg.gateway.id})

    async def events(self, request: web.Request) -> web.StreamResponse:
        self.api.authorize(request, "viewer")
        try:
            return await stream(request, self.feed)
        except OverflowError as err:
            raise AdminError(503, f"{err}; close one and try again") from None

    async def usage(self, request: web.Request) -> web.Response:
        """Daily counters and usage against every limit, and positions split today /
        yesterday: the account drill-down (the account itself is ``GET /v1/accounts/{id}``)."""
        self.api.authorize(request, "viewer")
        account = request.match_info["id"]
        try:
            view = self.gw.engine.account_view(account)
        except KeyError:
            raise AdminError(404, f"unknown account {account!r}") from None
        snap = self.gw.engine.snapshot()
        lim = self.gw.limits[account]
        return web.json_response({"account": account, "warn_fraction": lim.warn_fraction,
                                  "usage": account_usage(self.gw, account,
                                                         BookIndex(self.gw, snap), view),
                                  "positions": positions(snap, account)})

    async def audit_page(self, request: web.Request) -> web.Response:
        self.api.authorize(request, "viewer")
        q = request.query
        try:
            limit = int(q.get("limit", "50"))
            before = int(q["before"]) if q.get("before") not in (None, "") else None
        except ValueError:
            raise AdminError(400, "limit and before are whole numbers") from None
        if not 1 <= limit <= audit_view.PAGE_MAX:
            raise AdminError(400, f"limit: expected 1 to {audit_view.PAGE_MAX}", field="limit")
        if before is not None and before < 0:
            raise AdminError(400, "before: expected a sequence number >= 0", field="before")
        if self.audit is not None:
            return web.json_response(await self.audit.page(before, limit))
        return web.json_response(audit_view.memory_page(self.gw.killswitch.history, before,
                                                        limit))


def register(api: AdminApi) -> Console:
    """Add the console's page and read endpoints to the admin plane's app."""
    console = Console(api)
    r = api.app.router
    r.add_get("/", console.root)
    r.add_get("/console/", console.page)
    r.add_get("/console/{name}", console.page)
    r.add_get("/v1/whoami", console.whoami)
    r.add_get("/v1/events", console.events)
    r.add_get("/v1/accounts/{id}/usage", console.usage)
    r.add_get("/v1/audit", console.audit_page)
    api.app.on_shutdown.append(console.feed.close)
    return console
