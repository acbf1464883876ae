"""streams.yaml loaded into frozen Structs: stream keys, group numbers, turn timing and routes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

import msgspec

from ingress.errors import ConfigError

REQUIRED_STREAMS = ("events", "turns", "outbound", "dead")
# A worker app's name, as `switchboard apps add` takes it (the worker_apps CHECK agrees).
APP_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")


class _Spec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Config Structs reject unknown keys: a typo must not silently fall back to a default."""


class StreamSpec(_Spec, frozen=True, kw_only=True):
    # Streams read by groups are trimmed once every group has read and acknowledged an entry;
    # `maxlen` caps a stream nobody acknowledges (the dead letters) at about that many entries.
    maxlen: int | None = None


class RetentionSpec(_Spec, frozen=True, kw_only=True):
    trim_every_ms: int = 10_000
    audit_days: int = 30  # webhook_events rows (with raw bodies) older than this are deleted


class GroupSpec(_Spec, frozen=True, kw_only=True):
    stream: str
    batch: int = 32
    block_ms: int = 1000
    claim_idle_ms: int = 30_000
    max_deliveries: int = 5

    def __post_init__(self) -> None:
        for name in ("batch", "block_ms", "claim_idle_ms", "max_deliveries"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")


class TurnsSpec(_Spec, frozen=True, kw_only=True):
    poll_ms: int = 250
    debounce_ms: int = 0
    max_wait_ms: int = 10_000
    max_messages: int = 20
    # No customer left unanswered: a turn with no reply posted this long after it left is
    # handed to humans (0: never). An agent still working on it sends `hold` or `typing_on`
    # on sb:outbound, each pushing the deadline to `answer_within_s` from then, at most
    # `max_holds` times per unanswered turn, so a stuck agent cannot keep a customer waiting
    # for more than (max_holds + 1) * answer_within_s.
    answer_within_s: int = 120
    max_holds: int = 5
    # The conversation's last messages a turn carries besides the unanswered ones (0: none).
    history: int = 20

    def __post_init__(self) -> None:
        if self.answer_within_s < 0 or self.max_holds < 0:
            raise ValueError("`answer_within_s` and `max_holds` must not be negative")
        _check_history(self.history)


# A turn is one stream entry (and one HTTP push): its history is kept well within what an
# agent reads at once. Past a few hundred messages a bot wants its own store, not a turn.
HISTORY_MAX = 200


def _check_history(history: int | None) -> None:
    if history is not None and not 0 <= history <= HISTORY_MAX:
        raise ValueError(f"`history` must be 0 to {HISTORY_MAX}")


class IngressSpec(_Spec, frozen=True, kw_only=True):
    # While Redis is unreachable, webhooks go to a local fsync'd spool of at most this size
    # (then 503); it drains into the stream, in order, once Redis is back.
    spool_max_bytes: int = 256 * 1024 * 1024
    # A webhook whose X-Chatwoot-Delivery was stored this recently is answered 200, not stored.
    dedup_window_s: int = 600


class RateLimit(_Spec, frozen=True, kw_only=True):
    per_minute: int
    burst: int | None = None  # bucket size; default: a tenth of a minute's worth, at least 1

    @property
    def capacity(self) -> int:
        return self.burst or max(1, self.per_minute // 10)


class BreakerSpec(_Spec, frozen=True, kw_only=True):
    failures: int = 5  # consecutive transient failures of an account that open the breaker
    open_ms: int = 30_000  # how long it stays open before one probe is let through


class DeliverySpec(_Spec, frozen=True, kw_only=True):
    """How the deliver group treats Chatwoot: retries, limits, breaker."""

    timeout_ms: int = 10_000
    retry_ms: tuple[int, ...] = (1_000, 5_000, 15_000, 60_000, 300_000)
    jitter: float = 0.2  # each delay is spread by ±20%
    max_attempts: int = 8
    poll_ms: int = 250
    # An attempt owns its reply this long; past it, its deliverer is presumed dead.
    lease_ms: int = 60_000
    echo_wait_ms: int = 20_000
    host_limit: RateLimit = RateLimit(per_minute=2_400)  # Chatwoot allows 3000/min per IP
    # None: an account shares only its host's limit (Chatwoot has no account limit of its own).
    account_limit: RateLimit | None = None
    # Chatwoot refuses a conversation's message past 200 in a minute: burst + a minute's
    # refill stays within it.
    conversation_limit: RateLimit | None = RateLimit(per_minute=180, burst=20)
    breaker: BreakerSpec = BreakerSpec()

    def __post_init__(self) -> None:
        if not self.retry_ms:
            raise ValueError("`retry_ms` needs at least one delay")
        if not 0 <= self.jitter < 1:
            raise ValueError("`jitter` must be at least 0 and below 1")


class BackfillSpec(_Spec, frozen=True, kw_only=True):
    """How often the backfill worker asks Chatwoot for what its webhooks never brought."""

    every_s: int = 300
    # First scan of an account (no watermark, no webhook stored): this far back.
    lookback_s: int = 86_400
    # Conversation pages (25 each) at most per account and round.
    max_pages: int = 40
    # Activity this much older than the watermark is scanned again (clock skew, races).
    overlap_s: int = 60
    # A scan owns its account this long; past it, its process is presumed dead.
    lease_s: int = 300

    def __post_init__(self) -> None:
        for name in ("every_s", "max_pages", "lease_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")
        if self.lookback_s < 0 or self.overlap_s < 0:
            raise ValueError("`lookback_s` and `overlap_s` must not be negative")


class ForwardSpec(_Spec, frozen=True, kw_only=True):
    """The forward group: Instagram comments from Meta (on `events`) to worker apps. It runs
    only where Meta is configured, so its group is not under `groups:` (a group nobody reads
    would hold the events stream untrimmed)."""

    batch: int = 16
    block_ms: int = 1000
    # A forward that failed (Graph or the app) is tried again once idle this long.
    claim_idle_ms: int = 10_000
    max_deliveries: int = 8
    graph_version: str = "v21.0"
    graph_timeout_ms: int = 10_000
    owner_cache_s: int = 86_400  # media owners rarely change

    def __post_init__(self) -> None:
        if re.fullmatch(r"v[0-9]{1,3}\.[0-9]{1,3}", self.graph_version) is None:
            raise ValueError("`graph_version` must look like v21.0")
        for name in ("graph_timeout_ms", "owner_cache_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be at least 1")

    def group(self) -> GroupSpec:
        return GroupSpec(
            stream="events",
            batch=self.batch,
            block_ms=self.block_ms,
            claim_idle_ms=self.claim_idle_ms,
            max_deliveries=self.max_deliveries,
        )


Superseded = Literal["drop", "deliver"]
Unassigned = Literal["bot", "human"]


class Route(_Spec, frozen=True, kw_only=True):
    """Which conversations it covers, where their turns go, and how the bot behaves there."""

    name: str
    stream: str = "turns"
    # A worker app (`switchboard apps`) the `push` group POSTs this route's turns to, signed.
    # They still pass through `stream`, the queue the push group reads: a stream no agent
    # reads (`turns:<name>`) makes the app the route's only agent.
    app: str | None = None
    account: int | None = None
    inbox: int | None = None
    channel: str | None = None
    # Turn timing; unset: the `turns:` defaults.
    debounce_ms: int | None = None
    max_wait_ms: int | None = None
    max_messages: int | None = None
    answer_within_s: int | None = None
    max_holds: int | None = None
    history: int | None = None
    # A turn's history leaves out agents' private notes unless the route lets its bot see them
    # (they are written for colleagues, not for whoever runs the bot).
    history_private: bool = False
    # Who handles an open conversation nobody is assigned to (pending ones are always the bot's).
    open_unassigned: Unassigned = "bot"
    # When a human-handled conversation comes back to the bot.
    return_on_resolve: bool = True
    return_on_bot_assignment: bool = True
    # A reply to a turn that newer customer messages superseded: drop it, or deliver it anyway.
    superseded: Superseded = "drop"
    # A reply to a conversation humans now handle, or one resolved meanwhile.
    reply_when_human: bool = False
    reply_when_resolved: bool = False

    def __post_init__(self) -> None:
        for name in ("answer_within_s", "max_holds"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError("`answer_within_s` and `max_holds` must not be negative")
        _check_history(self.history)
        if self.app is not None and not APP_NAME.fullmatch(self.app):
            raise ValueError("`app` must be a worker app's name (lower-case letters, digits, - _)")

    def timing(self, defaults: TurnsSpec) -> TurnsSpec:
        return TurnsSpec(
            poll_ms=defaults.poll_ms,
            debounce_ms=_pick(self.debounce_ms, defaults.debounce_ms),
            max_wait_ms=_pick(self.max_wait_ms, defaults.max_wait_ms),
            max_messages=_pick(self.max_messages, defaults.max_messages),
            answer_within_s=_pick(self.answer_within_s, defaults.answer_within_s),
            max_holds=_pick(self.max_holds, defaults.max_holds),
            history=_pick(self.history, defaults.history),
        )

    def matches(self, *, account: int, inbox: int | None, channel: str | None) -> bool:
        return (
            (self.account is None or self.account == account)
            and (self.inbox is None or self.inbox == inbox)
            and (self.channel is None or self.channel == channel)
        )


class Topology(_Spec, frozen=True, kw_only=True):
    prefix: str = "sb"
    streams: dict[str, StreamSpec]
    groups: dict[str, GroupSpec]
    ingress: IngressSpec = IngressSpec()
    retention: RetentionSpec = RetentionSpec()
    turns: TurnsSpec = TurnsSpec()
    delivery: DeliverySpec = DeliverySpec()
    backfill: BackfillSpec = BackfillSpec()
    routes: tuple[Route, ...] = ()
    forward: ForwardSpec = ForwardSpec()

    def __post_init__(self) -> None:
        # Every key derives from prefix and stream name inside one hash tag; a brace of their
        # own would end that tag early and put one webhook's keys in different Cluster slots.
        names = [("prefix", self.prefix)] + [(f"stream `{n}`", n) for n in self.streams]
        names += [(f"route `{r.name}` stream", r.stream) for r in self.routes]
        for what, name in names:
            if "{" in name or "}" in name:
                raise ValueError(f"{what} {name!r}: braces are not allowed in key names")
        missing = [name for name in REQUIRED_STREAMS if name not in self.streams]
        if missing:
            raise ValueError(f"`streams` lacks {', '.join(missing)}")
        for group, spec in self.groups.items():
            if spec.stream not in self.streams:
                raise ValueError(f"group `{group}` reads unknown stream `{spec.stream}`")
        for route in self.routes:
            if route.stream != "turns" and not route.stream.startswith("turns:"):
                raise ValueError(f"route `{route.name}`: stream must be `turns` or `turns:<name>`")

    def key(self, stream: str) -> str:
        """The Redis key of a stream: `sb:events`, `sb:turns:sales`."""
        return f"{self.prefix}:{stream}"

    def route_for(self, *, account: int, inbox: int | None, channel: str | None) -> Route | None:
        for route in self.routes:
            if route.matches(account=account, inbox=inbox, channel=channel):
                return route
        return None

    def policy_for(self, *, account: int, inbox: int | None, channel: str | None) -> Route:
        """The route's policy, or the defaults for conversations no route covers."""
        return self.route_for(account=account, inbox=inbox, channel=channel) or UNROUTED

    def push_streams(self, group_stream: str) -> list[str]:
        """The streams the `push` group reads: its own, and every route's that names an app."""
        names = [group_stream, *(r.stream for r in self.routes if r.app is not None)]
        return list(dict.fromkeys(names))

    def route_named(self, name: str) -> Route | None:
        return next((r for r in self.routes if r.name == name), None)

    def stream_keys(self) -> list[str]:
        """Every stream's key, the turn streams of all routes included."""
        names = ["events", *sorted({r.stream for r in self.routes} | {"turns"}), "outbound", "dead"]
        return [self.key(name) for name in dict.fromkeys(names)]


UNROUTED = Route(name="unrouted")


def _pick(value: int | None, default: int) -> int:
    return default if value is None else value


def load(path: Path) -> Topology:
    """Read and validate streams.yaml; every problem is a ConfigError naming the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror})"]) from exc
    return parse(raw, source=str(path))


def parse(raw: bytes, *, source: str = "streams.yaml") -> Topology:
    try:
        return msgspec.yaml.decode(raw, type=Topology)
    except msgspec.ValidationError as exc:
        raise ConfigError([f"{source}: {exc}"]) from exc
    except msgspec.DecodeError as exc:
        raise ConfigError([f"{source}: not valid YAML ({exc})"]) from exc
