"""The persist group: webhook entries into PostgreSQL rows, and customer messages into turns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import msgspec
import structlog

from consumers import conversation as cv
from consumers import statuses
from consumers.clock import utcnow
from consumers.errors import PermanentError
from consumers.runner import StreamEntry
from consumers.store import ConversationRow, MessageRow, Store, Tx
from ingress import events, views
from ingress.topology import Topology

log = structlog.get_logger("persist")

MESSAGE_EVENTS = {"message_created", "message_updated"}
CONVERSATION_EVENTS = {
    "conversation_created",
    "conversation_updated",
    "conversation_status_changed",
    "conversation_opened",
    "conversation_resolved",
}
CONTACT_EVENTS = {"contact_created", "contact_updated"}

Outcome = tuple[str, str | None]  # (applied|duplicate|ignored, detail)


class Persister:
    """The handler of the persist group: one webhook entry, one transaction."""

    def __init__(
        self,
        store: Store,
        topology: Topology,
        *,
        bot_id: int | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.store = store
        self.topology = topology
        self.bot_id = bot_id
        self.clock = clock

    async def __call__(self, entry: StreamEntry) -> None:
        event = events.decode(events.EventEntry, entry.fields)
        structlog.contextvars.bind_contextvars(delivery=event.delivery, webhook_event=event.event)
        async with self.store.transaction() as tx:
            if not await tx.record_event(entry.id, event):
                log.info("event.skipped", reason="entry already processed")
                return
            try:
                outcome, detail = await self._apply(tx, event)
            except msgspec.ValidationError as exc:
                raise PermanentError(f"{event.event} body does not fit its view: {exc}") from exc
            await tx.set_outcome(entry.id, outcome, detail)
        log.info("event.persisted", outcome=outcome, detail=detail)

    async def _apply(self, tx: Tx, event: events.EventEntry) -> Outcome:
        if event.event in MESSAGE_EVENTS:
            return await self._message(tx, event, views.message_decoder.decode(event.body))
        if event.event in CONVERSATION_EVENTS:
            view = views.conversation_decoder.decode(event.body)
            account = _account(view.account, event)
            if account is None:
                return "ignored", "no account id in the payload"
            await self._conversation(tx, account, view)
            return "applied", None
        if event.event in CONTACT_EVENTS:
            contact = views.contact_decoder.decode(event.body)
            account = _account(contact.account, event)
            if account is None:
                return "ignored", "no account id in the payload"
            await tx.upsert_contact(
                account_id=account,
                contact_id=contact.id,
                name=contact.name,
                email=contact.email,
                phone=contact.phone_number,
                identifier=contact.identifier,
                version=event.received_at,
            )
            return "applied", None
        return "ignored", f"no effect for {event.event or 'an event without a name'}"

    async def _conversation(
        self, tx: Tx, account: int, view: views.Conversation
    ) -> ConversationRow:
        """Upsert guarded by Chatwoot's `updated_at`: an older snapshot changes nothing."""
        meta = view.meta or views.Meta()
        sender = meta.sender or views.Person()
        existing = await tx.lock_conversation(account, view.id)
        handler = cv.handler_after_snapshot(
            cv.Handler(existing.handler) if existing else cv.Handler.BOT,
            previous_status=existing.status if existing else None,
            status=view.status,
            assignee_type=meta.assignee_type,
        )
        row = ConversationRow(
            account_id=account,
            conversation_id=view.id,
            inbox_id=view.inbox_id,
            channel=view.channel,
            contact_id=sender.id,
            identity=cv.identity(view),
            status=view.status,
            assignee_type=meta.assignee_type,
            assignee_id=meta.assignee.id if meta.assignee else None,
            handler=handler,
            version=view.updated_at or 0.0,
        )
        if existing is None:
            if await tx.insert_conversation(row):
                return row
            # Another consumer inserted it meanwhile: take the update path on its row.
            existing = await tx.lock_conversation(account, view.id)
            assert existing is not None
        if row.version <= existing.version:
            return existing
        await tx.update_conversation(row)
        return row

    async def _message(self, tx: Tx, event: events.EventEntry, msg: views.Message) -> Outcome:
        account = _account(msg.account, event)
        if account is None or msg.conversation is None:
            raise PermanentError("message event without account or conversation")
        conv = await self._conversation(tx, account, msg.conversation)
        who = cv.speaker(msg)
        if who.kind is cv.SenderKind.CONTACT and msg.sender and msg.sender.id is not None:
            await tx.upsert_contact(
                account_id=account,
                contact_id=msg.sender.id,
                name=msg.sender.name,
                email=msg.sender.email,
                phone=msg.sender.phone_number,
                identifier=msg.sender.identifier,
                version=event.received_at,
            )
        row = _message_row(account, msg, who)
        inserted = await tx.insert_message(row)
        if not inserted and event.event == "message_updated":
            await tx.update_message_content(row)
        ours = msg.ext_ref is not None and await self._match_echo(tx, msg)
        if not ours:
            handler = cv.handler_after_message(cv.Handler(conv.handler), msg)
            if handler != conv.handler:
                await tx.set_handler(account, conv.conversation_id, handler)
                conv = msgspec.structs.replace(conv, handler=handler)
        if inserted and cv.is_customer_turn_input(msg):
            await self._schedule_turn(tx, conv, msg.id)
        if not inserted and event.event == "message_created":
            return "duplicate", f"message {msg.id} already stored"
        return "applied", "echo of our reply" if ours else None

    async def _match_echo(self, tx: Tx, msg: views.Message) -> bool:
        """Our own reply coming back: record Chatwoot's id and status on the outbound row."""
        assert msg.ext_ref is not None
        row = await tx.lock_outbound(msg.ext_ref)
        if row is None:
            return False
        reported = _embedded_status(msg) or statuses.Outbound.SENT
        current = statuses.Outbound(row.status)
        new = current
        if current not in (statuses.Outbound.FAILED, statuses.Outbound.SUPPRESSED):
            new = statuses.advance(current, reported)
        await tx.set_outbound(row.ref, status=new, chatwoot_message_id=msg.id)
        return True

    async def _schedule_turn(self, tx: Tx, conv: ConversationRow, message_id: int) -> None:
        if conv.handler != cv.Handler.BOT:
            return
        route = self.topology.route_for(
            account=conv.account_id, inbox=conv.inbox_id, channel=conv.channel
        )
        if route is None:
            return
        spec = self.topology.turns
        await tx.schedule_turn(
            account_id=conv.account_id,
            conversation_id=conv.conversation_id,
            message_id=message_id,
            now=self.clock(),
            debounce=dt.timedelta(milliseconds=spec.debounce_ms),
            max_wait=dt.timedelta(milliseconds=spec.max_wait_ms),
        )


def _account(ref: views.Ref | None, event: events.EventEntry) -> int | None:
    if ref is not None and isinstance(ref.id, int):
        return ref.id
    return event.account


def _embedded_status(msg: views.Message) -> statuses.Outbound | None:
    """Delivery receipts show only in `conversation.messages[]`, for the message it holds."""
    if msg.conversation is None:
        return None
    for embedded in msg.conversation.messages:
        if embedded.id == msg.id:
            return statuses.from_chatwoot(embedded.status)
    return None


def _message_row(account: int, msg: views.Message, who: cv.Speaker) -> MessageRow:
    assert msg.conversation is not None
    if who.direction is cv.Direction.INBOUND:
        status = str(statuses.Inbound.RECEIVED)
    else:
        status = str(_embedded_status(msg) or statuses.Outbound.SENT)
    return MessageRow(
        account_id=account,
        message_id=msg.id,
        conversation_id=msg.conversation.id,
        direction=who.direction,
        sender_kind=who.kind,
        sender_id=who.id,
        private=msg.private,
        message_type=str(msg.message_type) if msg.message_type is not None else None,
        # PostgreSQL text cannot hold NUL; the raw body keeps the original in webhook_events.
        content=msg.content.replace("\x00", "\ufffd") if msg.content else msg.content,
        content_type=msg.content_type,
        attachments=events.json_encoder.encode([_attachment(a) for a in msg.attachments]),
        status=status,
        created_at=_timestamp(msg.created_at),
        ext_ref=msg.ext_ref,
    )


def _attachment(raw: dict[str, object]) -> events.Attachment:
    try:
        return msgspec.convert(raw, events.Attachment, strict=False)
    except msgspec.ValidationError:
        # An attachment of an unexpected shape must not cost the message: keep what is sure.
        url = raw.get("data_url")
        return events.Attachment(data_url=url if isinstance(url, str) else None)


def _timestamp(value: str | int | None) -> dt.datetime | None:
    if isinstance(value, int):
        return dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    return None
