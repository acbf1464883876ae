"""The ops views' filters, read from a query string (shared by the JSON API and the page)."""

from __future__ import annotations

from collections.abc import Mapping

from consumers import dlq
from consumers.opsapp import params
from consumers.opsapp.context import HANDLERS, MAX_LIMIT, OUTCOMES, STATUSES
from consumers.store.overview import ConversationFilter, WebhookFilter


def webhooks(query: Mapping[str, str]) -> WebhookFilter:
    return WebhookFilter(
        outcome=params.choice(query, "outcome", OUTCOMES),
        event=params.text(query, "event"),
        since=params.moment(query, "since"),
        limit=_limit(query),
    )


def conversations(query: Mapping[str, str]) -> ConversationFilter:
    return ConversationFilter(
        account=params.integer(query, "account"),
        inbox=params.integer(query, "inbox"),
        status=params.choice(query, "status", STATUSES),
        handler=params.choice(query, "handler", HANDLERS),
        search=params.text(query, "q"),
        limit=_limit(query),
    )


def dead(query: Mapping[str, str]) -> tuple[dlq.Selection, int]:
    selection = dlq.Selection(since=params.moment(query, "since"),
                              reason=params.text(query, "reason"))  # fmt: skip
    return selection, _limit(query)


def hours(query: Mapping[str, str]) -> int:
    found = params.integer(query, "hours", default=24, low=1, high=24 * 31)
    assert found is not None
    return found


def _limit(query: Mapping[str, str]) -> int:
    found = params.integer(query, "limit", default=100, low=1, high=MAX_LIMIT)
    assert found is not None
    return found
