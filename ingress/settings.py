"""The one place that reads the environment: a frozen Settings built once and passed down."""

from __future__ import annotations

import hmac
import os
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from ingress.errors import ConfigError

T = TypeVar("T")
LogFormat = Literal["json", "console", "auto"]
DEFAULT_MAX_BODY_BYTES = 2 * 1024 * 1024


class Secret:
    """A string that never shows itself in a repr, a log line or a traceback."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def matches(self, candidate: str) -> bool:
        return hmac.compare_digest(self._value.encode(), candidate.encode())

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    database_url: str | None = None
    chatwoot_base_url: str | None = None
    chatwoot_api_token: Secret | None = None
    chatwoot_user_token: Secret | None = None
    chatwoot_bot_id: int | None = None
    webhook_secrets: tuple[Secret, ...] = ()
    outbound_token: Secret | None = None
    ops_token: Secret | None = None
    streams_path: Path = Path("streams.yaml")
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: LogFormat = "auto"
    home: Path = Path(".switchboard")
    signature_tolerance_s: int = 300

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build Settings, collecting every problem into one ConfigError (a line per variable)."""
        return _Reader(os.environ if environ is None else environ).settings()

    def require(self, *names: str) -> None:
        """Fail with a clear line for each setting a command needs but was not given."""
        missing = [name.upper() for name in names if getattr(self, name) is None]
        if missing:
            raise ConfigError([f"{name} is required for this command" for name in missing])


class _Reader:
    def __init__(self, environ: Mapping[str, str]) -> None:
        self.env = environ
        self.problems: list[str] = []

    def get(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def parse(self, name: str, convert: Callable[[str], T], default: T) -> T:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            return convert(raw)
        except ValueError as exc:
            self.problems.append(f"{name}: {exc}")
            return default

    def settings(self) -> Settings:
        secrets = self.get("CHATWOOT_WEBHOOK_SECRETS") or ""
        settings = Settings(
            redis_url=self.parse("REDIS_URL", _url("redis", "rediss", "unix"), None),
            database_url=self.parse("DATABASE_URL", _url("postgres", "postgresql"), None),
            chatwoot_base_url=self.parse("CHATWOOT_BASE_URL", _base_url, None),
            chatwoot_api_token=_secret(self.get("CHATWOOT_API_TOKEN")),
            chatwoot_user_token=_secret(self.get("CHATWOOT_USER_TOKEN")),
            chatwoot_bot_id=self.parse("CHATWOOT_BOT_ID", _positive, None),
            webhook_secrets=tuple(Secret(s.strip()) for s in secrets.split(",") if s.strip()),
            outbound_token=_secret(self.get("OUTBOUND_TOKEN")),
            ops_token=_secret(self.get("OPS_TOKEN")),
            streams_path=Path(self.get("SWITCHBOARD_STREAMS") or "streams.yaml"),
            max_body_bytes=self.parse("MAX_BODY_BYTES", _positive, DEFAULT_MAX_BODY_BYTES),
            host=self.get("HOST") or "127.0.0.1",
            port=self.parse("PORT", _port, 8000),
            log_format=self.parse("LOG_FORMAT", _log_format, "auto"),
            home=Path(self.get("SWITCHBOARD_HOME") or ".switchboard"),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return settings


def _secret(value: str | None) -> Secret | None:
    return None if value is None else Secret(value)


def _positive(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number, got {raw!r}") from None
    if value < 1:
        raise ValueError(f"must be at least 1, got {value}")
    return value


def _port(raw: str) -> int:
    value = _positive(raw)
    if value > 65535:
        raise ValueError(f"must be a TCP port (1-65535), got {value}")
    return value


def _log_format(raw: str) -> LogFormat:
    for allowed in typing.get_args(LogFormat):
        if raw == allowed:
            return typing.cast(LogFormat, allowed)
    raise ValueError(f"must be json, console or auto, got {raw!r}")


def _url(*schemes: str) -> Callable[[str], str]:
    def check(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes:
            # The value may hold a password: name only the scheme we saw.
            raise ValueError(f"must start with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return check


def _base_url(raw: str) -> str:
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"must be an http(s) URL such as https://chat.example.com, got {raw!r}")
    return raw.rstrip("/")
