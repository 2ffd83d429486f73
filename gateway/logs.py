"""Logging set-up: one stream on stderr — structlog JSON lines (for collectors), or readable
console output on a TTY — for our own events *and* every library's.

The gateway logs through structlog; aiohttp, aiokafka, asyncio and uvloop log through the
standard library's ``logging``. Left alone, the latter reach stderr through Python's
last-resort handler as plain text with multi-line tracebacks, in the middle of a JSON stream a
collector cannot parse. So the root ``logging`` handler renders library records with the same
processors and renderer as structlog (``ProcessorFormatter``): each becomes one JSON object
with ``event``, ``level``, ``timestamp`` and ``logger`` (the library's logger name), its
traceback, if any, as an ``exception`` string inside the object. Python warnings
(``logging.captureWarnings``) and, in JSON mode, an uncaught exception in the main thread or a
worker thread go the same way, so every line of a JSON log is JSON.

The level applies to both: ``--log-level info`` keeps aiokafka's and aiohttp's debug chatter out.
"""

from __future__ import annotations

import logging
import sys
import threading
from types import TracebackType
from typing import Any

import structlog

_HANDLER_NAME = "fengkong-stderr"


def configure_logging(level: str = "info", json: bool | None = None) -> None:
    if json is None:
        json = not sys.stderr.isatty()
    threshold = logging.getLevelNamesMapping()[level.upper()]
    renderer: Any = (structlog.processors.JSONRenderer() if json
                     else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    # JSON: a traceback becomes a string field; the console renderer prints it itself.
    exc = [structlog.processors.format_exc_info] if json else []
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            stamp,
            *exc,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.stdlib.add_log_level,
            stamp,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *exc, renderer],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):  # configured again (tests, the demo): one handler only
        if old.get_name() == _HANDLER_NAME:
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(threshold)
    logging.captureWarnings(True)
    if json:
        sys.excepthook = _uncaught
        threading.excepthook = _uncaught_in_thread


_crash_log = structlog.get_logger("fengkong.crash")


def _uncaught(kind: type[BaseException], value: BaseException,
              tb: TracebackType | None) -> None:
    _crash_log.critical("uncaught exception", exc_info=(kind, value, tb))


def _uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    _crash_log.critical("uncaught exception in a thread",
                        thread=args.thread.name if args.thread is not None else "",
                        exc_info=(args.exc_type, args.exc_value, args.exc_traceback))
