"""The backfill worker: recovers from Chatwoot's lists what its webhooks never brought.

Chatwoot never retries an account webhook, so a message sent while the ingress was down is
lost unless fetched. Per account, a scan lists conversations by last activity (newest first)
down to the account's watermark, lists each one's messages we may lack, and publishes those we
do not hold to sb:events as `source=backfill` `message_created` entries with a deterministic
delivery id, so persist stores each once, like the webhook it replaces. The watermark moves
only after the scan's entries are in the stream; a lease lets one process scan an account.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import msgspec
import redis.asyncio as aioredis
import structlog

from consumers import synthetic
from consumers.chatwoot import (
    CONVERSATIONS_PER_PAGE,
    MESSAGES_PER_PAGE,
    ApiMessage,
    ChatwootClient,
    ListedConversation,
)
from consumers.counters import Counters
from consumers.errors import ChatwootError, HandlerError
from consumers.limits import Limits
from consumers.store import Store
from consumers.store.backfill import BackfillSQL
from ingress import events
from ingress.connect import UNAVAILABLE
from ingress.settings import Settings
from ingress.topology import Topology

log = structlog.get_logger("backfill")

# The ingress's dedup, shared: XADD unless this delivery id was published within the window.
XADD_ONCE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', unpack(ARGV, 2))
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return id
"""
INCOMING = 0  # the REST list's message_type of a customer message
OFF_REASON = "CHATWOOT_USER_TOKEN is not set: bot tokens cannot list conversations or messages"


class _Stopped(Exception):
    """SIGTERM mid-scan: the scan ends where it is, its watermark unmoved."""


class Cursor(msgspec.Struct, kw_only=True):
    """A sweep that takes more than one round (more active conversations than `max_pages`):
    the next round lists from `page` on, down to `floor`, and the watermark moves (to
    `newest`) only once the sweep has reached `floor`. Kept in Redis: a lost cursor only
    means the sweep starts again from the top, the watermark unmoved, so nothing is skipped.

    Messages are listed from `messages_from` (at most `floor`): after a multi-round sweep, one
    more pass from the top lists messages from the old floor, since a conversation whose
    new activity moved it above the sweep's cursor was listed by no round of it."""

    page: int = 1
    floor: float
    messages_from: float
    newest: float | None = None


class Report(msgspec.Struct, kw_only=True):
    """What a round did, summed over its accounts."""

    accounts: int = 0
    busy: int = 0  # accounts another process was scanning
    conversations: int = 0
    found: int = 0  # messages Chatwoot has and we did not
    published: int = 0  # entries added to sb:events (a repeat within the dedup window is not)
    failed: int = 0  # accounts whose scan Chatwoot failed: retried next round

    def add(self, other: Report) -> None:
        for name in self.__struct_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def line(self) -> str:
        return (
            f"{self.accounts} accounts, {self.conversations} conversations scanned, "
            f"{self.found} messages found, {self.published} events published"
            + (f", {self.busy} accounts busy (another scan)" if self.busy else "")
            + (f", {self.failed} accounts failed (Chatwoot)" if self.failed else "")
        )


class Backfiller:
    name = "backfill"

    def __init__(
        self,
        store: Store,
        redis: aioredis.Redis,
        client: ChatwootClient,
        topology: Topology,
        *,
        base_url: str,
        accounts: Iterable[int] = (),
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        owner: str | None = None,
    ) -> None:
        self.store = store
        self.redis = redis
        self.client = client
        self.topology = topology
        self.spec = topology.backfill
        self.accounts = set(accounts)
        self.clock = clock
        self.sleep = sleep
        self.owner = owner or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.events_key = topology.key("events")
        self.counters = Counters(redis, metrics_key=topology.key("metrics"))
        # The deliverers' buckets: backfill calls count against the same Chatwoot limits.
        self.limits = Limits(redis, tag=f"{{{topology.key('outbound')}}}",
                             spec=topology.delivery, counters=self.counters)  # fmt: skip
        self.host = urlsplit(base_url).netloc
        self._xadd_once: Any = redis.register_script(XADD_ONCE)
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """A round at start, then one every `every_s`; sooner again after a failed one."""
        log.info("runner.started", group=self.name, every_s=self.spec.every_s)
        while not self._stopping.is_set():
            wait = float(self.spec.every_s)
            try:
                report = await self.round(periodic=True)
                if report.failed:
                    wait = min(wait, 30.0)
            except UNAVAILABLE + (HandlerError,) as exc:
                log.warning("worker.unavailable", group=self.name, error=str(exc))
                wait = min(wait, 5.0)
            except Exception:  # noqa: BLE001
                # A fault of ours in one round must not end this process's other groups
                # (persist, deliver): logged with its traceback, retried next round.
                log.exception("backfill.crashed")
                await self.counters.add("backfill.crashed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), timeout=wait)
        log.info("runner.stopped", group=self.name)

    async def round(
        self, *, since: float | None = None, accounts: Iterable[int] = (), periodic: bool = False
    ) -> Report:
        """Scan the given accounts (default: every account we know); `since` (epoch) scans
        from then instead of each watermark. A periodic round skips accounts scanned lately."""
        chosen = sorted(set(accounts))
        if not chosen:
            async with self.store.transaction() as tx:
                known = await BackfillSQL(tx.conn).backfill_accounts()
            chosen = sorted(set(known) | self.accounts)
        report = Report()
        for account in chosen:
            if self._stopping.is_set():
                break
            report.add(await self.scan(account, since=since, periodic=periodic))
        log.info("backfill.finished", **msgspec.structs.asdict(report))
        return report

    async def scan(self, account: int, *, since: float | None, periodic: bool) -> Report:
        """One account: lease, list (no transaction open), publish, release and advance."""
        report = Report(accounts=1)
        now = self.clock()
        recent = _moment(now - self.spec.every_s / 2) if periodic else None
        async with self.store.transaction() as tx:
            lease = await BackfillSQL(tx.conn).take_lease(
                account, owner=self.owner, now=_moment(now),
                until=_moment(now + self.spec.lease_s), scanned_before=recent,
            )  # fmt: skip
        if lease is None:
            report.busy = 1
            return report
        reached: float | None = None
        try:
            start = since if since is not None else lease.last_activity_at
            if start is None:
                start = await self._first_start(account, now)
            reached = await self._sweep(account, start, report, manual=since is not None)
        except _Stopped:
            reached = None  # what was published stays published; the next scan repeats it
        except ChatwootError as exc:
            report.failed = 1
            reached = None  # the watermark stays: the next round covers this one's span
            await self.counters.add("backfill.failed")
            log.warning("backfill.failed", account=account, error=str(exc),
                        status=exc.status)  # fmt: skip
        finally:
            async with self.store.transaction() as tx:
                await BackfillSQL(tx.conn).release_lease(
                    account, owner=self.owner, now=_moment(self.clock()), last_activity_at=reached
                )
        await self.counters.add("backfill.published", report.published)
        log.info("backfill.scanned", account=account, conversations=report.conversations,
                 found=report.found, published=report.published, watermark=reached)  # fmt: skip
        return report

    async def _first_start(self, account: int, now: float) -> float:
        """No watermark yet: from the newest webhook we stored, within `lookback_s`."""
        async with self.store.transaction() as tx:
            newest = await BackfillSQL(tx.conn).newest_webhook(account)
        floor = now - self.spec.lookback_s
        return floor if newest is None else max(newest, floor)

    async def _sweep(
        self, account: int, start: float, report: Report, *, manual: bool
    ) -> float | None:
        """This round's part of a sweep from the top down to the watermark `start`: the new
        watermark once the sweep is complete, None while it goes on (or a manual scan was
        cut short: the watermark only ever marks what was fully listed)."""
        cursor = None if manual else await self._load_cursor(account)
        if cursor is None:
            cursor = Cursor(floor=start, messages_from=start)
        floor = min(cursor.floor, start)
        overlap = self.spec.overlap_s
        listed, next_page = await self._active(account, floor - overlap, first=cursor.page)
        messages_from = min(cursor.messages_from, floor) - overlap
        for conversation in listed:
            report.conversations += 1
            await self._messages(account, conversation, messages_from, report)
        seen = [c.activity for c in listed] + ([cursor.newest] if cursor.newest else [])
        newest = max(seen, default=None)
        if next_page is not None:
            if not manual:
                await self._save_cursor(account, Cursor(page=next_page, floor=floor,
                                        messages_from=min(cursor.messages_from, floor),
                                        newest=newest))  # fmt: skip
            return None
        reached = max(newest or start, start)
        if manual:
            return reached
        if cursor.page > 1:
            # A multi-round sweep just ended: one pass from the top lists messages back to
            # its floor (see Cursor).
            await self._save_cursor(account, Cursor(floor=reached, messages_from=floor))
        else:
            await self._drop_cursor(account)
        return reached

    async def _active(
        self, account: int, cutoff: float, *, first: int
    ) -> tuple[list[ListedConversation], int | None]:
        """Pages of conversations from page `first`, newest activity first, until one is older
        than `cutoff` (with this sort, every later one is older too): what was listed, and the
        page to go on from when `max_pages` ran out first (None: the cutoff was reached)."""
        found: dict[int, ListedConversation] = {}
        # A continued sweep lists one page more, before `first`: a conversation above the
        # cursor deleted between rounds shifts the rest up by one, and the one it pushes onto
        # page `first - 1` would otherwise be listed by no round (the final pass from the top
        # only lists what moved above the sweep). Seen twice harms nothing: stored messages
        # are skipped.
        start = first - 1 if first > 1 else first
        for page in range(start, first + self.spec.max_pages):
            await self._token(account)
            listed = await self.client.list_conversations(account, page)
            for conversation in listed:
                if conversation.activity < cutoff:
                    return list(found.values()), None
                # Activity during the scan moves a conversation up: keep its first sighting.
                found.setdefault(conversation.id, conversation)
            if len(listed) < CONVERSATIONS_PER_PAGE:
                return list(found.values()), None
        log.warning("backfill.truncated", account=account, pages=self.spec.max_pages,
                    next_page=first + self.spec.max_pages,
                    hint="the next round goes on from there; raise backfill.max_pages, "
                    "or scan more often")  # fmt: skip
        return list(found.values()), first + self.spec.max_pages

    def _cursor_key(self, account: int) -> str:
        return f"{self.topology.prefix}:backfill:cursor:{account}"

    async def _load_cursor(self, account: int) -> Cursor | None:
        raw: Any = await self.redis.get(self._cursor_key(account))
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Cursor)
        except msgspec.DecodeError:
            return None  # an unreadable cursor is no cursor: the sweep starts from the top

    async def _save_cursor(self, account: int, cursor: Cursor) -> None:
        # Expires: a sweep abandoned for that long starts again from the top (nothing lost).
        await self.redis.set(self._cursor_key(account), msgspec.json.encode(cursor),
                             ex=max(self.spec.lookback_s, 3600))  # fmt: skip

    async def _drop_cursor(self, account: int) -> None:
        await self.redis.delete(self._cursor_key(account))

    async def _messages(
        self, account: int, conversation: ListedConversation, cutoff: float, report: Report
    ) -> None:
        async with self.store.transaction() as tx:
            after = await BackfillSQL(tx.conn).resume_after(account, conversation.id, cutoff)
        listed: list[ApiMessage] = []
        while True:
            await self._token(account)
            page = await self.client.message_page(account, conversation.id, after=after)
            # Older messages were covered by an earlier scan (or predate us: never answer
            # history); activity messages are never webhooks.
            listed += [m for m in page if m.created_at >= cutoff
                       and m.message_type in synthetic.MESSAGE_TYPES]  # fmt: skip
            if len(page) < MESSAGES_PER_PAGE:
                break
            after = page[-1].id
        if not listed:
            return
        async with self.store.transaction() as tx:
            held = await BackfillSQL(tx.conn).stored_message_ids(account, [m.id for m in listed])
        replied = synthetic.last_public_reply(listed)
        for message in listed:
            if message.id not in held:
                report.found += 1
                answered = replied is not None and message.id < replied
                report.published += await self._publish(
                    account, conversation, message, answered=answered
                )

    async def _publish(
        self,
        account: int,
        conversation: ListedConversation,
        message: ApiMessage,
        *,
        answered: bool = False,
    ) -> int:
        body = synthetic.message_created(account, conversation, message)
        if body is None:  # activity messages were left out: no webhook exists for them
            return 0
        delivery = f"backfill:{account}:{message.id}"
        entry = events.EventEntry(
            source="backfill",
            event="message_created",
            delivery=delivery,
            account=account,
            conversation=conversation.id,
            received_at=int(self.clock() * 1000),
            signed=False,
            body=events.json_encoder.encode(body),
            # Persist applies it against today's snapshot: a question someone answered while
            # we were not listening must not come back as a turn (the bot would answer it).
            answered=answered and message.message_type == INCOMING,
        )
        args: list[Any] = [self.topology.ingress.dedup_window_s]
        for name, value in events.encode(entry).items():
            args += [name, value]
        seen = f"{{{self.events_key}}}:delivery:{delivery}"
        added = await self._xadd_once(keys=[self.events_key, seen], args=args)
        if added is not None:
            log.info("backfill.published", account=account, conversation=conversation.id,
                     message=message.id)  # fmt: skip
        return 0 if added is None else 1

    async def _token(self, account: int) -> None:
        """One token of the shared Chatwoot buckets per call (checked before each call, so
        a stop does not wait for a long scan to end)."""
        while True:
            if self._stopping.is_set():
                raise _Stopped
            wait = await self.limits.wait_for_token(self.host, account)
            if wait <= 0:
                return
            await self.sleep(wait)


def _moment(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.UTC)


@contextlib.asynccontextmanager
async def opened(
    settings: Settings,
    topology: Topology,
    redis: aioredis.Redis,
    store: Store,
    *,
    accounts: Iterable[int] = (),
) -> AsyncIterator[Backfiller | None]:
    """The backfill worker with its own Chatwoot client, or None (logged once, with why)
    when no user token is set."""
    if settings.chatwoot_user_token is None or settings.chatwoot_base_url is None:
        log.warning("backfill.off", reason=OFF_REASON if settings.chatwoot_user_token is None
                    else "CHATWOOT_BASE_URL is not set")  # fmt: skip
        yield None
        return
    client = ChatwootClient(
        settings.chatwoot_base_url,
        settings.chatwoot_api_token or settings.chatwoot_user_token,
        user_token=settings.chatwoot_user_token,
        timeout=topology.delivery.timeout_ms / 1000,
    )
    async with client:
        yield Backfiller(
            store, redis, client, topology, base_url=settings.chatwoot_base_url, accounts=accounts
        )
