"""structlog, configured once: JSON lines when stderr is not a terminal, pretty output when it is."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

_configured = False

# Keys whose values never reach a log line, whatever logged them.
_SECRET_KEYS = ("token", "secret", "password", "authorization", "api_key", "apikey", "signature")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if any(s in key.lower() for s in _SECRET_KEYS):
            event[key] = "[redacted]"
    return event


def configure_logging(fmt: str = "auto", level: str = "info") -> None:
    """Idempotent: the first call wins, later calls are no-ops."""
    global _configured
    if _configured:
        return
    _configured = True
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=True)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(**bound: Any) -> Any:
    return structlog.get_logger().bind(**bound)


def quiet(level: int = logging.WARNING) -> None:
    """Only warnings and errors (or only what is at least ``level``) from here on: a live timeline or a
    progress bar is the human output, and log lines below it would only repeat it."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(level))
