"""The router with its order path compiled: ``gateway.fastroute.RouterCore`` + ``RouterBase``.

``gateway.router.Router`` is the reference: the order path in plain Python. ``FastRouter`` runs
the same order path compiled (``gateway/fastroute.pyx``) and shares every rare case —
sessions, reconciliation, alerts, views — with it through ``RouterBase``. The gateway uses it
whenever the extension is built (``router_class``); ``fengkong serve --router reference`` (or a
checkout without a C compiler) runs the reference, which decides, sends and journals the same.
"""

from __future__ import annotations

from typing import Any

import structlog

from gateway.router import Router, RouterBase

log = structlog.get_logger("fengkong.router")

try:
    from gateway.fastroute import Order, RouterCore
    from gateway.idtable import IdTable
except ImportError:  # not built: the reference stands in
    FastRouter: Any = None
else:
    class FastRouter(RouterCore, RouterBase):  # type: ignore[no-redef, misc]
        """``RouterBase`` with the compiled order path (``gateway.fastroute``)."""

        order_type = Order
        id_memory = IdTable


def router_class(name: str = "fast") -> type:
    """The router for ``--router``: "fast" (compiled, if built) or "reference"."""
    if name == "reference":
        return Router
    if name != "fast":
        raise ValueError(f"router must be 'fast' or 'reference', not {name!r}")
    if FastRouter is None:
        log.warning("the compiled order path (gateway/fastroute.pyx) is not built: running "
                    "the reference router; build it with `make build`")
        return Router
    return FastRouter
