"""Counts the consumer processes keep in Redis, summed across processes and served by the
ingress's /metrics: plain counts in one hash (`<prefix>:metrics`, readable with `redis-cli
HGETALL sb:metrics`), and latency histograms and labelled counters in another
(`<prefix>:metrics:series`).

A histogram's bucket counts are additive, so every process HINCRBYs the one bucket an
observation falls in, and the scrape sums them up into Prometheus's cumulative buckets. The
series hash's fields describe themselves (the ingress needs no bucket list of its own):

- `h|<metric>|<label>=<value>,...|<le>`: observations in the bucket whose upper bound is
  `<le>` (seconds; `+Inf` last) and above the previous bound;
- `h|<metric>|<labels>|sum`, `...|count`: their sum (seconds) and number;
- `c|<metric>|<labels>`: a labelled counter.
"""

from __future__ import annotations

import bisect
import re
from collections import Counter

import redis.asyncio as aioredis

from ingress.connect import UNAVAILABLE

# Upper bounds, seconds: from a local commit (ms) to a debounce window or a retried reply.
BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0,
)  # fmt: skip
BOUNDS = (*(f"{b:g}" for b in BUCKETS), "+Inf")

# The metrics the consumers observe (names as /metrics serves them).
WEBHOOK_STORED = "switchboard_webhook_stored_seconds"
TURN_EMITTED = "switchboard_turn_emitted_seconds"
REPLY_POSTED = "switchboard_reply_posted_seconds"
CHATWOOT_REQUEST = "switchboard_chatwoot_request_seconds"
DEAD_LETTERS = "switchboard_dead_letters"

_ID = re.compile(r"/[0-9]+(?=/|$)")
_UNSAFE = re.compile(r"[|,=\s]")


def series_key(metrics_key: str) -> str:
    return f"{metrics_key}:series"


def labels(**values: str) -> str:
    """`k=v,k=v`, sorted; a value never holds the separators (they would split it)."""
    return ",".join(f"{k}={_UNSAFE.sub('_', v)[:80]}" for k, v in sorted(values.items()))


def endpoint(path: str) -> str:
    """A Chatwoot path as a label of few values: ids out, so
    `/api/v1/accounts/3/conversations/9/messages` is `conversations/:id/messages`."""
    templated = _ID.sub("/:id", path.split("?")[0]).removeprefix("/api/v1")
    return templated.removeprefix("/accounts/:id/").strip("/")


def bucket(seconds: float) -> str:
    """The bound of the bucket `seconds` falls in (Prometheus buckets hold `le` itself)."""
    return BOUNDS[bisect.bisect_left(BUCKETS, seconds)]


class Counters:
    def __init__(self, redis: aioredis.Redis, *, metrics_key: str | None) -> None:
        self.redis = redis
        self.key = metrics_key  # None: count nothing
        self.series = series_key(metrics_key) if metrics_key is not None else None
        # The histogram series this process has written every bucket of (see `observe`).
        self._seeded: set[str] = set()

    async def add(self, name: str, amount: int = 1) -> None:
        """Best effort: a count lost to a Redis hiccup must not fail the work it counts."""
        if self.key is None:
            return
        try:
            await self.redis.hincrby(self.key, name, amount)
        except UNAVAILABLE:
            pass

    async def count(self, metric: str, amount: int = 1, **label_values: str) -> None:
        """A labelled counter (best effort, like `add`)."""
        if self.series is None:
            return
        try:
            await self.redis.hincrby(self.series, f"c|{metric}|{labels(**label_values)}", amount)
        except UNAVAILABLE:
            pass

    async def observe(self, metric: str, seconds: list[float], **label_values: str) -> None:
        """Observations of one histogram, in one round trip whatever their number (a batch's
        entries): one HINCRBY per bucket hit, the count and the sum. Best effort. A negative
        duration (clocks of two machines apart) counts as zero."""
        if self.series is None or not seconds:
            return
        values = [max(0.0, s) for s in seconds]
        prefix = f"h|{metric}|{labels(**label_values)}|"
        hits = Counter(bucket(v) for v in values)
        if prefix not in self._seeded:
            # Every bucket exists from a series' first observation on (an empty one at 0):
            # a bucket appearing only later would be misread by rate() and quantiles.
            hits.update(dict.fromkeys(BOUNDS, 0))
        pipe = self.redis.pipeline(transaction=False)
        for bound, count in hits.items():
            pipe.hincrby(self.series, prefix + bound, count)
        pipe.hincrby(self.series, prefix + "count", len(values))
        pipe.hincrbyfloat(self.series, prefix + "sum", sum(values))
        try:
            await pipe.execute()
        except UNAVAILABLE:
            return
        self._seeded.add(prefix)

    async def chatwoot_call(
        self, method: str, path: str, status: int | None, seconds: float
    ) -> None:
        """The Chatwoot client's hook: one API call's duration, by method, endpoint and
        status (`error` when no answer came)."""
        await self.observe(
            CHATWOOT_REQUEST, [seconds], method=method, endpoint=endpoint(path),
            status=str(status) if status is not None else "error",
        )  # fmt: skip
