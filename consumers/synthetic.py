"""Webhook-shaped bodies built from Chatwoot's REST listings (pure).

A backfilled message enters sb:events as the `message_created` webhook Chatwoot never
delivered, so persist stores it, and hands off or schedules turns, exactly as for a webhook.
The REST forms differ from the webhook's (chatwoot.md §2, §4): int `message_type`, epoch
`created_at`, a contact sender with `type`; they are turned into the webhook's forms here.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the shapes only: this module calls nothing
    from consumers.chatwoot import ApiMessage, ListedConversation

ACTIVITY = 2  # "Assigned to …", "Conversation was resolved …": never a webhook, never stored
MESSAGE_TYPES = {0: "incoming", 1: "outgoing", 3: "template"}
_CONTACT_KEYS = ("id", "name", "email", "phone_number", "identifier", "thumbnail",
                 "additional_attributes", "custom_attributes", "blocked")  # fmt: skip


def iso(epoch: float) -> str:
    """Epoch seconds as the webhook writes times: ISO-8601 UTC with milliseconds."""
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


def message_created(
    account: int, conversation: ListedConversation, message: ApiMessage
) -> dict[str, Any] | None:
    """The `message_created` webhook of a listed message; None for activity messages."""
    kind = MESSAGE_TYPES.get(message.message_type)
    if kind is None:
        return None
    body: dict[str, Any] = {
        "event": "message_created",
        "id": message.id,
        "content": message.content,
        "content_type": message.content_type,
        # Kept whole: our `ext_ref` in it is how persist recognises the echo of our reply.
        "content_attributes": message.content_attributes or {},
        "message_type": kind,
        "private": message.private,
        "source_id": message.source_id,
        "created_at": iso(message.created_at),
        "sender": sender(message.sender),
        "inbox": {"id": conversation.inbox_id},
        "account": {"id": account},
        "additional_attributes": message.additional_attributes or {},
        "conversation": snapshot(account, conversation, message),
    }
    if message.attachments:
        body["attachments"] = message.attachments
    return body


def last_public_reply(messages: list[ApiMessage]) -> int | None:
    """The id of the newest public reply by a human listed (an agent's, or one sent from the
    channel's own app: `external_echo`): a customer message before it was answered while we
    were not listening. Templates (greeting, out-of-office) answer nobody, and a bot reply
    answers only its own turn, which settles through its echo: neither counts, or a later
    question lost with its webhook would look answered and never be put to the bot."""
    replies = [m.id for m in messages if human_reply(m)]
    return max(replies, default=None)


def human_reply(message: ApiMessage) -> bool:
    if message.message_type != 1 or message.private:  # 1: outgoing
        return False
    if (message.content_attributes or {}).get("external_echo"):
        return True
    return (message.sender or {}).get("type") == "user"


def sender(listed: dict[str, Any] | None) -> dict[str, Any] | None:
    """The webhook's sender: a contact has no `type` key there; agents and bots keep theirs."""
    if listed is None:
        return None
    kind = listed.get("type")
    if kind in (None, "contact"):
        return {key: listed[key] for key in _CONTACT_KEYS if key in listed}
    out = {key: listed.get(key) for key in ("id", "name")}
    if kind == "user":
        out["email"] = listed.get("email")
    out["type"] = kind
    return out


def snapshot(account: int, conversation: ListedConversation, message: ApiMessage) -> dict[str, Any]:
    """The conversation as the list shows it now, with its real `updated_at`: persist keeps
    the newest snapshot by that version and dates its hand-off signals by it, so a snapshot
    taken now neither rolls the conversation back nor claims its state earlier than it was."""
    meta = conversation.meta
    assignee = meta.get("assignee")
    # The list names only human assignees (no `assignee_type`): a present one is a User.
    assignee_type = meta.get("assignee_type") or ("User" if assignee else None)
    out: dict[str, Any] = {
        "id": conversation.id,
        "inbox_id": conversation.inbox_id,
        "channel": meta.get("channel"),
        "status": conversation.status,
        "labels": conversation.labels,
        "meta": {
            "sender": meta.get("sender"),
            "assignee": assignee,
            "assignee_type": assignee_type,
            "team": meta.get("team"),
        },
        "custom_attributes": conversation.custom_attributes,
        "additional_attributes": conversation.additional_attributes,
        # This message as `conversation.messages[]` holds it: where its status shows.
        "messages": [
            {
                "id": message.id,
                "message_type": message.message_type,
                "status": message.status,
                "created_at": int(message.created_at),
                "private": message.private,
            }
        ],
        "created_at": conversation.created_at,
        "updated_at": conversation.updated_at,
        "timestamp": conversation.timestamp,
        "last_activity_at": conversation.last_activity_at,
        "account": {"id": account},
    }
    if conversation.contact_inbox is not None:
        out["contact_inbox"] = conversation.contact_inbox
    return out
