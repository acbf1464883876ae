"""The one place that reads the environment: a frozen Settings built once and passed down."""

from __future__ import annotations

import hmac
import os
import re
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

import msgspec

from ingress.errors import ConfigError

T = TypeVar("T")
LogFormat = Literal["json", "console", "auto"]
LogLevel = Literal["debug", "info", "warning", "error"]
# The default streams.yaml ships inside the package, so every command finds it from any
# directory; the repository's root streams.yaml is the documented copy (a test keeps them equal).
PACKAGED_STREAMS = Path(__file__).resolve().parent / "streams.yaml"
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


class WebhookSecret(Secret):
    """A Chatwoot webhook secret, bound to one account (`N:secret`) or valid for any."""

    __slots__ = ("account",)

    def __init__(self, value: str, account: int | None = None) -> None:
        super().__init__(value)
        self.account = account


# Only a leading run of ASCII digits and a colon binds a secret to an account: the secret
# itself may hold colons (and "whsec_..." never starts with a digit).
_ACCOUNT_BINDING = re.compile(r"([0-9]{1,18}):(.*)", re.DOTALL)
UNSIGNED_REFUSED = (
    "CHATWOOT_WEBHOOK_SECRETS is not set: the ingress will not accept unsigned webhooks. "
    "Set it to your Chatwoot webhook secret(s), or ALLOW_UNSIGNED_WEBHOOKS=1 to accept them "
    "unsigned"
)


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    redis_url: str | None = None
    database_url: str | None = None
    chatwoot_base_url: str | None = None
    chatwoot_api_token: Secret | None = None
    chatwoot_user_token: Secret | None = None
    chatwoot_bot_id: int | None = None
    webhook_secrets: tuple[WebhookSecret, ...] = ()
    allow_unsigned_webhooks: bool = False
    outbound_token: Secret | None = None
    ops_token: Secret | None = None
    # AUTOMATION_TOKEN: like CHATWOOT_WEBHOOK_SECRETS, `N:token` binds a token to account N.
    automation_tokens: tuple[WebhookSecret, ...] = ()
    streams_path: Path = PACKAGED_STREAMS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    host: str = "127.0.0.1"
    port: int = 8000
    log_format: LogFormat = "auto"
    log_level: LogLevel = "info"
    home: Path = Path(".switchboard")
    # Where `switchboard up` writes the URLs of the servers it runs, for the other commands:
    # under SWITCHBOARD_HOME when that is set, else one per-user file (XDG state directory),
    # so that a command run from any directory finds them.
    servers_file: Path = Path(".switchboard/servers.json")
    signature_tolerance_s: int = 300
    # Worker apps (issue #12): http URLs, and URLs that resolve to private addresses.
    allow_http_apps: bool = False
    allow_private_apps: bool = False
    # -- Meta (Instagram comment webhooks, /webhooks/meta and the forward group) --------------
    # META_APP_SECRET turns the endpoint on (it verifies X-Hub-Signature-256); the verify token
    # answers Meta's subscription challenge; the access token asks the Graph API for a media's
    # owner (META_GRAPH_URL: another base URL, for tests).
    meta_app_secret: Secret | None = None
    meta_verify_token: Secret | None = None
    meta_access_token: Secret | None = None
    meta_graph_url: str = "https://graph.facebook.com"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build Settings, collecting every problem into one ConfigError (a line per variable)."""
        return _Reader(os.environ if environ is None else environ).settings()

    def require(self, *names: str) -> None:
        """Fail with a clear line for each setting a command needs but was not given."""
        missing = [name.upper() for name in names if getattr(self, name) is None]
        if missing:
            raise ConfigError([f"{name} is required for this command" for name in missing])

    def require_webhook_auth(self) -> None:
        """No secret means anyone can post events: refuse unless that was asked for."""
        if not self.webhook_secrets and not self.allow_unsigned_webhooks:
            raise ConfigError([UNSIGNED_REFUSED])


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

    def servers_file(self) -> Path:
        home = self.get("SWITCHBOARD_HOME")
        if home is not None:
            return Path(home) / "servers.json"
        state = self.get("XDG_STATE_HOME") or str(Path(self.get("HOME") or "~") / ".local/state")
        return Path(state).expanduser() / "switchboard" / "servers.json"

    def settings(self) -> Settings:
        settings = Settings(
            redis_url=self.parse(
                "REDIS_URL",
                _url("redis", "rediss", "unix", "redis+cluster", "rediss+cluster"),
                None,
            ),
            database_url=self.parse("DATABASE_URL", _url("postgres", "postgresql"), None),
            chatwoot_base_url=self.parse("CHATWOOT_BASE_URL", _base_url, None),
            chatwoot_api_token=_secret(self.get("CHATWOOT_API_TOKEN")),
            chatwoot_user_token=_secret(self.get("CHATWOOT_USER_TOKEN")),
            chatwoot_bot_id=self.parse("CHATWOOT_BOT_ID", _positive, None),
            webhook_secrets=self.parse("CHATWOOT_WEBHOOK_SECRETS", _webhook_secrets, ()),
            allow_unsigned_webhooks=self.parse("ALLOW_UNSIGNED_WEBHOOKS", _flag, False),
            outbound_token=_secret(self.get("OUTBOUND_TOKEN")),
            ops_token=_secret(self.get("OPS_TOKEN")),
            automation_tokens=self.parse("AUTOMATION_TOKEN", _webhook_secrets, ()),
            streams_path=Path(self.get("SWITCHBOARD_STREAMS") or PACKAGED_STREAMS),
            max_body_bytes=self.parse("MAX_BODY_BYTES", _positive, DEFAULT_MAX_BODY_BYTES),
            host=self.get("HOST") or "127.0.0.1",
            port=self.parse("PORT", _port, 8000),
            log_format=self.parse("LOG_FORMAT", _log_format, "auto"),
            log_level=self.parse("LOG_LEVEL", _log_level, "info"),
            home=Path(self.get("SWITCHBOARD_HOME") or ".switchboard"),
            servers_file=self.servers_file(),
            allow_http_apps=self.parse("ALLOW_HTTP_APPS", _flag, False),
            allow_private_apps=self.parse("ALLOW_PRIVATE_APPS", _flag, False),
            meta_app_secret=_secret(self.get("META_APP_SECRET")),
            meta_verify_token=_secret(self.get("META_VERIFY_TOKEN")),
            meta_access_token=_secret(self.get("META_ACCESS_TOKEN")),
            meta_graph_url=self.parse("META_GRAPH_URL", _base_url, "https://graph.facebook.com"),
        )
        if self.problems:
            raise ConfigError(self.problems)
        return settings


def _secret(value: str | None) -> Secret | None:
    return None if value is None else Secret(value)


def _webhook_secrets(raw: str) -> tuple[WebhookSecret, ...]:
    """Comma-separated, any one verifies (rotation); `N:secret` binds a secret to account N."""
    secrets = []
    for position, item in enumerate(raw.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        bound = _ACCOUNT_BINDING.fullmatch(item)
        if bound is None:
            secrets.append(WebhookSecret(item))
            continue
        secret = bound.group(2).strip()
        if not secret:
            # Name the position, never the value: the rest of the list is secret.
            raise ValueError(f"entry {position} binds account {bound.group(1)} to no secret")
        secrets.append(WebhookSecret(secret, account=int(bound.group(1))))
    return tuple(secrets)


def _flag(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"must be 1 or 0, got {raw!r}")


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


def _log_level(raw: str) -> LogLevel:
    for allowed in typing.get_args(LogLevel):
        if raw.lower() == allowed:
            return typing.cast(LogLevel, allowed)
    raise ValueError(f"must be debug, info, warning or error, got {raw!r}")


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
