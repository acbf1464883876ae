"""Meta webhooks (Instagram comments): the subscription challenge, and signed events stored in
sb:events as `source=meta` like any webhook (same size cap, spool, dedup and answers).

The facts relied on are in meta.md: `hub.*` query parameters for the challenge, and
`X-Hub-Signature-256` over the raw body with the app secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Awaitable, Callable

import msgspec
import structlog
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from ingress import events, signatures
from ingress.metrics import Metrics
from ingress.settings import Settings

log = structlog.get_logger("ingress")

SOURCE = "meta"  # the `source` of their sb:events entries (and audit rows)
# Meta sends a number; anything echoed back is kept short and plain, so this endpoint can
# never be made to reflect markup or a long body.
_CHALLENGE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
# The `object` of the body names the event ("instagram", "page"): kept if it looks like one.
_OBJECT = re.compile(r"[a-z_]{1,40}")


class _Body(msgspec.Struct):
    """What the ingress reads of a Meta body: only that it is an object, and its `object`."""

    object: str = ""


_body_decoder = msgspec.json.Decoder(_Body)


# The app's body reader: the body, or None when it is over the limit (413).
ReadBody = Callable[[Request, int], Awaitable[bytes | None]]
Store = Callable[[events.EventEntry], Awaitable[Response]]


def delivery_id(body: bytes) -> str:
    """Meta sends no delivery id, and retries a failed delivery with the same bytes for up to
    36 hours: a digest of the raw body is the same on every retry, so the ingress dedup keeps
    one. The same comment batched into another body is caught later, by the forward group's
    dedup on the comment id."""
    return f"meta:{hashlib.sha256(body).hexdigest()[:40]}"


def event_name(body: bytes) -> str | None:
    """`meta.<object>` for a JSON object (`meta` when its `object` is odd), None otherwise."""
    try:
        parsed = _body_decoder.decode(body)
    except msgspec.ValidationError:
        # A JSON object with an odd `object`: kept (Meta will not resend), forward decides.
        try:
            return "meta" if isinstance(msgspec.json.decode(body), dict) else None
        except (msgspec.DecodeError, RecursionError):
            return None
    except (msgspec.DecodeError, RecursionError):
        return None
    return f"meta.{parsed.object}" if _OBJECT.fullmatch(parsed.object) else "meta"


def challenge_answer(settings: Settings, params: dict[str, str]) -> str | None:
    """The challenge to echo when Meta's subscription check names our verify token, else
    None. Constant time: the comparison does not tell how much of a guess was right."""
    token = settings.meta_verify_token
    if token is None or params.get("hub.mode") != "subscribe":
        return None
    given = params.get("hub.verify_token", "")
    if not hmac.compare_digest(token.reveal().encode(), given.encode("utf-8", "surrogatepass")):
        return None
    answer = params.get("hub.challenge", "")
    return answer if _CHALLENGE.fullmatch(answer) else None


class MetaWebhooks:
    """`GET|POST /webhooks/meta`; off (404) without META_APP_SECRET."""

    def __init__(
        self,
        settings: Settings,
        meters: Metrics,
        clock: Callable[[], float],
        *,
        read_body: ReadBody,
        store: Store,
    ) -> None:
        self.settings = settings
        self.secret = settings.meta_app_secret
        self.meters = meters
        self.clock = clock
        self.read_body = read_body
        self.store = store

    def warn_at_start(self) -> None:
        if self.secret is not None and self.settings.meta_verify_token is None:
            log.warning(
                "meta.no_verify_token",
                detail="META_VERIFY_TOKEN is not set: GET /webhooks/meta refuses Meta's "
                "subscription challenge (403), so the webhook cannot be (re)configured",
            )

    async def challenge(self, request: Request) -> Response:
        structlog.contextvars.clear_contextvars()
        if self.secret is None:
            return _off()
        answer = challenge_answer(self.settings, dict(request.query_params))
        if answer is None:
            # The query holds the token: never logged, not even when wrong.
            log.warning("meta.challenge_refused", status=403)
            return JSONResponse({"error": "wrong hub.mode or hub.verify_token"}, status_code=403)
        log.info("meta.challenge_answered")
        return PlainTextResponse(answer)

    async def webhook(self, request: Request) -> Response:
        structlog.contextvars.clear_contextvars()
        if self.secret is None:
            return _off()
        limit = self.settings.max_body_bytes
        try:
            body = await self.read_body(request, limit)
        except ClientDisconnect:
            return Response(status_code=400)
        if body is None:
            self.meters.webhooks.labels("too_large").inc()
            log.warning("meta.rejected", reason="body too large", status=413)
            return JSONResponse({"error": f"body over {limit} bytes"}, status_code=413)
        check = signatures.verify_meta(
            body,
            signature=request.headers.get("x-hub-signature-256"),
            secret=self.secret.reveal().encode(),
        )
        if not check.ok:
            self.meters.webhooks.labels("unauthorized").inc()
            log.warning("meta.rejected", reason=check.reason, status=401)
            return JSONResponse({"error": check.reason}, status_code=401)
        name = event_name(body)
        if name is None:
            self.meters.webhooks.labels("malformed").inc()
            log.warning("meta.rejected", reason="malformed JSON", status=400)
            return JSONResponse({"error": "body is not a JSON object"}, status_code=400)
        delivery = delivery_id(body)
        structlog.contextvars.bind_contextvars(delivery=delivery)
        entry = events.EventEntry(
            source=SOURCE,
            event=name,
            delivery=delivery,
            received_at=int(self.clock() * 1000),
            signed=True,
            body=body,
        )
        return await self.store(entry)


def _off() -> Response:
    return JSONResponse(
        {"error": "/webhooks/meta is off: set META_APP_SECRET (and META_VERIFY_TOKEN)"},
        status_code=404,
    )
