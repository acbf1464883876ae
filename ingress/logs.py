"""structlog set-up, done once per process: JSON lines in production, console on a TTY."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import msgspec
import structlog

from ingress.settings import LogFormat, LogLevel

# Keys whose values never reach a log line, whoever binds them.
REDACTED = ("token", "secret", "password", "authorization", "api_access_token", "signature")


@functools.lru_cache(maxsize=1024)
def _is_secret(key: str) -> bool:
    # Memoized: every log line passes the same few keys through here.
    return any(word in key.lower() for word in REDACTED)


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in event:
        if _is_secret(key):
            event[key] = "********"
    return event


def _dumps(obj: Any, default: Any = None) -> str:
    # structlog passes `default=`; msgspec takes `enc_hook` and returns bytes.
    return msgspec.json.encode(obj, enc_hook=str).decode()


LEVELS: dict[LogLevel, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure(log_format: LogFormat = "auto", level: int | LogLevel = logging.INFO) -> None:
    """`level`: a logging level number, or LOG_LEVEL's name for one."""
    if isinstance(level, str):
        level = LEVELS[level]
    console = log_format == "console" or (log_format == "auto" and sys.stderr.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer()
        if console
        else structlog.processors.JSONRenderer(serializer=_dumps)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            # Tracebacks without frame locals: locals hold request bodies and tokens.
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
            if not console
            else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    # uvicorn's access log would print every webhook a second time; our line is enough.
    logging.getLogger("uvicorn.access").disabled = True
