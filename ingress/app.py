"""The Starlette app: webhook and outbound endpoints, health and readiness."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import msgspec
import redis.asyncio as aioredis
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ingress import automation, events, idempotency, meta, signatures, views
from ingress.connect import UNAVAILABLE, redis_client
from ingress.errors import PublishError
from ingress.metrics import VERSION, Metrics
from ingress.publish import Publisher
from ingress.settings import Settings
from ingress.spool import Spool, SpoolInUse
from ingress.topology import Topology

log = structlog.get_logger("ingress")

# Each socket step (connect, one reply); the publisher bounds the whole call to about 1 s.
REDIS_SOCKET_TIMEOUT_S = 0.5
# A spooled record is a body (at most MAX_BODY_BYTES) plus a few short fields and framing.
RECORD_MARGIN = 256 * 1024


class _Answer(msgspec.Struct):
    """What a stored webhook is answered: the same keys, in the same order, as before."""

    entry: str | None
    spooled: bool
    duplicate: bool


_ANSWER = msgspec.json.Encoder()


class BodyTooLarge(Exception):
    pass


class Ingress:
    """The request handlers, holding what they need; built by `create_app`."""

    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        publisher: Publisher,
        clock: Callable[[], float],
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.memo = idempotency.Memo(publisher.redis, topology.key("outbound"))
        self.clock = clock
        self.keys = [
            signatures.Key(secret=s.reveal().encode(), account=s.account)
            for s in settings.webhook_secrets
        ]
        self.bound = any(key.account is not None for key in self.keys)
        self.events_key = topology.key("events")
        self.meters = Metrics(topology)
        # The counters of the hot path's outcomes, looked up once rather than per webhook.
        self.outcomes = {
            name: self.meters.webhooks.labels(name) for name in ("stored", "duplicate", "spooled")
        }
        self.outbound_key = topology.key("outbound")
        self.drainer: asyncio.Task[None] | None = None  # set by the lifespan
        self.meta = meta.MetaWebhooks(
            settings, self.meters, clock, read_body=_read_capped,
            store=lambda entry: self._store_webhook(entry, log_event="meta.accepted"),
        )  # fmt: skip

    async def chatwoot_webhook(self, request: Request) -> Response:
        structlog.contextvars.clear_contextvars()
        # Bounded here: the dedup key and the audit column must hold it (a UUID normally).
        delivery = events.bounded_delivery(request.headers.get("x-chatwoot-delivery", ""))
        structlog.contextvars.bind_contextvars(delivery=delivery)
        try:
            body = await _read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            self.meters.webhooks.labels("too_large").inc()
            log.warning("webhook.rejected", reason="body too large", status=413)
            return _error(413, f"body over {self.settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        # Routing first (a bounded decode of a few fields): an account-bound secret verifies
        # only the accounts the body names. A bad signature is still refused before a bad body.
        routing = _route(body)
        check = signatures.verify_chatwoot(
            body,
            timestamp=request.headers.get("x-chatwoot-timestamp"),
            signature=request.headers.get("x-chatwoot-signature"),
            secrets=self.keys,
            # Only an account-bound secret looks at the accounts: skip the walk without one.
            accounts=routing.account_ids() if routing is not None and self.bound else frozenset(),
            now=self.clock(),
            tolerance_s=self.settings.signature_tolerance_s,
        )
        if not check.ok:
            self.meters.webhooks.labels("unauthorized").inc()
            log.warning("webhook.rejected", reason=check.reason, status=401)
            return _error(401, check.reason)
        if routing is None:
            self.meters.webhooks.labels("malformed").inc()
            log.warning("webhook.rejected", reason="malformed JSON", status=400)
            return _error(400, "body is not a JSON object")
        entry = events.EventEntry(
            event=routing.event,
            delivery=delivery,
            account=routing.account_id_int(),
            conversation=routing.conversation_id_int(),
            received_at=int(self.clock() * 1000),
            signed=check.signed,
            body=body,
        )
        return await self._store_webhook(entry, log_event="webhook.accepted")

    async def automation_webhook(self, request: Request) -> Response:
        """Automation-rule and macro webhooks: unsigned, no delivery id (chatwoot.md §4b).
        The URL's token stands in for the signature, a business key for the delivery id.
        Neither the URL nor the token is ever logged."""
        structlog.contextvars.clear_contextvars()
        if not self.settings.automation_tokens:
            return _error(
                404,
                "POST /webhooks/chatwoot/automation is off: set AUTOMATION_TOKEN and give "
                "Chatwoot's automation rules and macros the URL with ?token=<it>",
            )
        try:
            body = await _read_body(request, self.settings.max_body_bytes)
        except BodyTooLarge:
            self.meters.webhooks.labels("too_large").inc()
            log.warning("automation.rejected", reason="body too large", status=413)
            return _error(413, f"body over {self.settings.max_body_bytes} bytes")
        except ClientDisconnect:
            return Response(status_code=400)
        routing = _route(body)
        # The token is checked against the body's accounts (a token bound to account N covers
        # only bodies naming N alone), and before anything is said about the body.
        accounts = routing.account_ids() if routing is not None else frozenset()
        if not automation.token_ok(
            self.settings.automation_tokens, request.query_params.get("token"), accounts
        ):
            self.meters.webhooks.labels("unauthorized").inc()
            log.warning("automation.rejected", reason="missing or wrong token", status=401)
            return _error(401, "missing or wrong ?token=")
        if routing is None:
            self.meters.webhooks.labels("malformed").inc()
            log.warning("automation.rejected", reason="malformed JSON", status=400)
            return _error(400, "body is not a JSON object")
        if not automation.is_automation(routing.event):
            self.meters.webhooks.labels("malformed").inc()
            log.warning("automation.rejected", reason="not an automation event", status=400)
            return _error(400, "only automation_event.* and macro.executed are taken here")
        account = routing.account_id_int()
        delivery = automation.business_key(body, event=routing.event, account=account)
        structlog.contextvars.bind_contextvars(delivery=delivery)
        entry = events.EventEntry(
            source=automation.SOURCE,
            event=routing.event,
            delivery=delivery,
            account=account,
            conversation=routing.conversation_id_int(),
            received_at=int(self.clock() * 1000),
            signed=False,
            body=body,
        )
        return await self._store_webhook(entry, log_event="automation.accepted")

    async def _store_webhook(self, entry: events.EventEntry, *, log_event: str) -> Response:
        try:
            published = await self.publisher.publish(
                self.events_key, entry, delivery=entry.delivery
            )
        except PublishError as exc:
            # Not stored: say so, so the failure is visible in Chatwoot's logs and ours.
            self.meters.webhooks.labels("unstored").inc()
            log.error("webhook.unstored", webhook_event=entry.event, error=str(exc), status=503)
            return _error(503, "event store unavailable")
        outcome = (
            "spooled" if published.spooled else "duplicate" if published.duplicate else "stored"
        )
        self.outcomes[outcome].inc()
        log.info(
            log_event,
            webhook_event=entry.event,
            account=entry.account,
            conversation=entry.conversation,
            entry=published.entry,
            spooled=published.spooled,
            duplicate=published.duplicate,
            signed=entry.signed,
        )
        # msgspec encodes the answer several times faster than JSONResponse's json.dumps.
        return Response(_ANSWER.encode(_Answer(published.entry, published.spooled,
                                               published.duplicate)),
                        media_type="application/json")  # fmt: skip

    async def outbound(self, request: Request) -> Response:
        structlog.contextvars.clear_contextvars()
        token = self.settings.outbound_token
        if token is None:
            return _error(404, "POST /outbound is off: set OUTBOUND_TOKEN to turn it on")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.matches(given.strip()):
            return _error(401, "missing or wrong bearer token")
        try:
            body = await _read_body(request, self.settings.max_body_bytes)
            entry = msgspec.json.decode(body, type=events.OutboundEntry)
        except BodyTooLarge:
            return _error(413, f"body over {self.settings.max_body_bytes} bytes")
        except msgspec.ValidationError as exc:
            return _error(422, str(exc))
        except msgspec.DecodeError:
            return _error(400, "body is not valid JSON")
        key = request.headers.get(idempotency.HEADER)
        if key is not None:
            try:
                key = idempotency.checked(key)
            except idempotency.BadKey as exc:
                return _error(422, str(exc))
            if entry.ref is not None and entry.ref != key:
                return _error(422, "Idempotency-Key and the body's ref differ: give one")
            entry = msgspec.structs.replace(entry, ref=key)
        # A ref chosen by the caller makes the POST idempotent; a generated one is unique.
        chosen = entry.ref is not None
        if entry.ref is None:
            entry = msgspec.structs.replace(entry, ref=f"http-{uuid.uuid4().hex}")
        return await self._publish_reply(entry, body, chosen=chosen)

    async def _publish_reply(
        self, entry: events.OutboundEntry, body: bytes, *, chosen: bool
    ) -> Response:
        """Publish once per ref: a retried POST gets the first one's answer (idempotency.py)."""
        assert entry.ref is not None
        seen = await self.memo.recall(entry.ref) if chosen else None
        sha = idempotency.fingerprint(body)
        if seen is not None:
            if seen.body_sha256 != sha:
                return _error(422, "Idempotency-Key was used with another body")
            log.info("outbound.repeated", ref=entry.ref, entry=seen.entry)
            return JSONResponse({"ref": entry.ref, "entry": seen.entry}, status_code=202)
        try:
            published = await self.publisher.publish(self.outbound_key, entry)
        except PublishError as exc:
            log.error("outbound.unstored", ref=entry.ref, error=str(exc), status=503)
            return _error(503, "event store unavailable")
        if chosen:
            await self.memo.remember(entry.ref, idempotency.Remembered(published.entry, sha))
        log.info("outbound.accepted", ref=entry.ref, kind=entry.kind, entry=published.entry)
        return JSONResponse({"ref": entry.ref, "entry": published.entry}, status_code=202)

    async def metrics(self, request: Request) -> Response:
        spool = self.publisher.spool
        body = await self.meters.render(self.publisher.redis, spool.size() if spool else 0)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": VERSION})

    async def ready(self, request: Request) -> Response:
        """Ready while webhooks can be kept: Redis answers, or the spool still has room; and
        a spool, if there is one, can be written and is being drained."""
        spool = self.publisher.spool
        spooled = spool.size() if spool is not None else 0
        if spool is not None:
            problem = (
                "spool not writable"
                if not await asyncio.to_thread(spool.writable)
                else "spool drainer stopped"
                if self.drainer is None or self.drainer.done()
                else None
            )
            if problem is not None:
                body = {"status": "unready", "spool": problem, "spool_bytes": spooled}
                return JSONResponse(body, status_code=503)
        if await self.publisher.ping():
            return JSONResponse({"status": "ready", "redis": "ok", "spool_bytes": spooled})
        if spool is not None and spooled < spool.max_bytes:
            return JSONResponse({"status": "ready", "redis": "unreachable", "spool_bytes": spooled})
        return JSONResponse(
            {"status": "unready", "redis": "unreachable", "spool_bytes": spooled}, status_code=503
        )


def _hold_spool(spool: Spool) -> None:
    """Own the spool, or refuse to start (SpoolInUse, with one line saying why). A spool
    whose lock file cannot be made is unusable anyway: logged, /ready says so."""
    try:
        spool.hold()
    except SpoolInUse as exc:
        log.error("spool.in_use", path=str(spool.path), error=str(exc))
        raise
    except OSError as exc:
        log.error("spool.unusable", path=str(spool.path), error=str(exc))


async def _check_spool(spool: Spool) -> None:
    """What a crash left in the spool is checked before anything is appended to it. A spool
    that cannot be read is logged, not fatal: /ready says unready, Redis still takes webhooks."""
    try:
        kept = await spool.check()
    except OSError as exc:
        log.error("spool.unusable", path=str(spool.path), error=str(exc))
        return
    if kept:
        log.info("spool.found", path=str(spool.path), bytes=kept)


def _route(body: bytes) -> views.Routing | None:
    """The routing fields, or None when the body is not a JSON object at all (or nests deeper
    than the decoder goes: no Chatwoot payload does)."""
    try:
        return views.routing_decoder.decode(body)
    except msgspec.ValidationError:
        # Valid JSON whose routing fields have odd types: keep it (Chatwoot will not resend),
        # persist decides what it is. Only a non-object is refused.
        try:
            parsed = msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError):
            return None
        return views.Routing() if isinstance(parsed, dict) else None
    except (msgspec.DecodeError, RecursionError):
        return None


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_capped(request: Request, limit: int) -> bytes | None:
    try:
        return await _read_body(request, limit)
    except BodyTooLarge:
        return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    settings: Settings,
    topology: Topology,
    *,
    redis: aioredis.Redis | None = None,
    spool_path: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The ingress app. Given no Redis client, it makes one from REDIS_URL and closes it on exit.
    With a spool path, webhooks survive a Redis outage there.

    Making a client does no I/O: connections open on first use, inside the server's loop.
    """
    settings.require_webhook_auth()
    owned = redis is None
    if redis is None:
        settings.require("redis_url")
        assert settings.redis_url is not None
        redis = redis_client(
            settings.redis_url,
            socket_connect_timeout=REDIS_SOCKET_TIMEOUT_S,
            socket_timeout=REDIS_SOCKET_TIMEOUT_S,
            # redis-py's default Retry (10 attempts with backoff on the Redis() constructor)
            # would spend Chatwoot's 5 s on a dead Redis: one try, then the spool.
            retry=Retry(NoBackoff(), 0),
        )
    client = redis
    spec = topology.ingress
    spool = None
    if spool_path is not None:
        spool = Spool(spool_path, max_bytes=spec.spool_max_bytes,
                      max_record=settings.max_body_bytes + RECORD_MARGIN)  # fmt: skip
    publisher = Publisher(client, spool=spool, dedup_window_s=spec.dedup_window_s)
    ingress = Ingress(settings, topology, publisher, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if not ingress.keys:
            log.warning(
                "ingress.unsigned",
                detail="ALLOW_UNSIGNED_WEBHOOKS is set and no CHATWOOT_WEBHOOK_SECRETS: anyone "
                "who can reach /webhooks/chatwoot can post events (stored with signed=0)",
            )
        ingress.meta.warn_at_start()
        drainer = None
        if spool is not None:
            _hold_spool(spool)  # before the check: one process checks, appends and drains it
            await _check_spool(spool)
            drainer = ingress.drainer = asyncio.create_task(publisher.keep_draining())
        try:
            yield
        finally:
            if spool is not None and drainer is not None:
                drainer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await drainer
                await spool.settled()  # a cut the cancel interrupted ends before the last drain
                with contextlib.suppress(*UNAVAILABLE, OSError):
                    await publisher.drain_spool()  # a last chance before exiting
            if spool is not None:
                spool.release()
            if owned:
                await client.aclose()

    routes = [
        Route("/webhooks/chatwoot", ingress.chatwoot_webhook, methods=["POST"]),
        Route("/webhooks/chatwoot/automation", ingress.automation_webhook, methods=["POST"]),
        Route("/webhooks/meta", ingress.meta.challenge, methods=["GET"]),
        Route("/webhooks/meta", ingress.meta.webhook, methods=["POST"]),
        Route("/outbound", ingress.outbound, methods=["POST"]),
        Route("/health", ingress.health, methods=["GET"]),
        Route("/ready", ingress.ready, methods=["GET"]),
        Route("/metrics", ingress.metrics, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.ingress = ingress  # for inspection (the drainer task, the spool)
    return app
