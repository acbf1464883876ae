"""Whether a reply may still go out (pure): the bot never talks over a human, and a reply to
a turn newer customer messages superseded is dropped, each per the route's policy."""

from __future__ import annotations

from consumers.conversation import Handler, turn_through
from ingress.events import OutboundEntry, OutboundKind
from ingress.topology import Route


def closed_because(
    reply: OutboundEntry,
    *,
    handler: str | None,
    status: str | None,
    last_inbound: int,
    route: Route,
) -> str | None:
    """The reason a reply must be suppressed, or None to send it.

    Only public messages are gated: a private note talks over nobody, and hand-off, resolve
    and typing are actions an agent may take at any time. A conversation never seen (handler
    None) is not gated: an agent may start one.
    """
    if reply.kind is not OutboundKind.MESSAGE or reply.private or handler is None:
        return None
    if handler == Handler.HUMAN and not route.reply_when_human:
        return "a human handles the conversation"
    if status == "resolved" and not route.reply_when_resolved:
        return "the conversation is resolved"
    through = turn_through(reply.turn)
    if through is not None and last_inbound > through and route.superseded == "drop":
        return "superseded by newer customer messages"
    return None
