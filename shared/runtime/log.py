"""structlog configured in one place: JSON lines on stdout with the run id as correlation id."""

from __future__ import annotations

import logging
import sys

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(service: str, level: str = "info", stream=None) -> structlog.stdlib.BoundLogger:
    """JSON unless a human is watching a terminal; `merge_contextvars` first so a handler's
    `bind_contextvars(run_id=...)` reaches every line it logs."""
    stream = stream or sys.stdout
    renderer = (
        structlog.dev.ConsoleRenderer() if stream.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level.lower(), logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    return structlog.get_logger()


def bind_run(run_id: str | None, **fields) -> None:
    """Start of every handler: forget the last message's context, bind this one's (a message of
    no run, a JetStream advisory say, binds no run_id)."""
    service = structlog.contextvars.get_contextvars().get("service")
    structlog.contextvars.clear_contextvars()
    if run_id is not None:
        fields["run_id"] = run_id
    structlog.contextvars.bind_contextvars(service=service, **fields)
