"""All SQL: the only package that imports asyncpg.

Every write is an upsert guarded by Chatwoot's own versions, so applying the same events in
any order, any number of times, converges on the same rows.
"""

from consumers.store.database import Store, Tx
from consumers.store.rows import (
    ConversationRow,
    DueAnswer,
    DueTurn,
    MessageRow,
    OutboundRow,
    ReplyContext,
    StoredMessage,
)

__all__ = [
    "ConversationRow",
    "DueAnswer",
    "DueTurn",
    "MessageRow",
    "OutboundRow",
    "ReplyContext",
    "Store",
    "StoredMessage",
    "Tx",
]
