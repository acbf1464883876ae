"""Query parameters of the ops views, checked: a bad one is a 400 naming it."""

from __future__ import annotations

import datetime as dt
import re
import urllib.parse
from collections.abc import Mapping

from starlette.requests import Request

ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")
MAX_TEXT = 200


class BadParameter(ValueError):
    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


def _given(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name)
    return value.strip() if value is not None and value.strip() else None  # empty: not set


def integer(
    query: Mapping[str, str], name: str, *, default: int | None = None, low: int = 0,
    high: int = 2**63 - 1,
) -> int | None:  # fmt: skip
    raw = _given(query, name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?\d{1,19}", raw):
        raise BadParameter(name, "not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(name, f"must be between {low} and {high}")
    return value


def choice(query: Mapping[str, str], name: str, options: frozenset[str]) -> str | None:
    raw = _given(query, name)
    if raw is not None and raw not in options:
        raise BadParameter(name, f"must be one of {', '.join(sorted(options))}")
    return raw


def moment(query: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = _given(query, name)
    if raw is None:
        return None
    try:
        value = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise BadParameter(name, "not an ISO time, e.g. 2026-06-18T09:00Z") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def text(query: Mapping[str, str], name: str) -> str | None:
    raw = _given(query, name)
    if raw is not None and (len(raw) > MAX_TEXT or "\x00" in raw):
        raise BadParameter(name, f"at most {MAX_TEXT} characters, no NUL")
    return raw


def entry_id(raw: str, name: str = "entry") -> str:
    if not ENTRY_ID.fullmatch(raw):
        raise BadParameter(name, "not a stream entry id, e.g. 1718700000000-0")
    return raw


MAX_FORM_BYTES = 16 * 1024


async def form(request: Request) -> dict[str, str]:
    """A small url-encoded form (the page's forms send a field or two). Parsed here rather
    than with `request.form()`, which needs python-multipart for what two fields need not."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise BadParameter("form", f"over {MAX_FORM_BYTES} bytes")
    try:
        fields = urllib.parse.parse_qs(body.decode(errors="replace"), max_num_fields=20)
    except ValueError:
        raise BadParameter("form", "too many fields") from None
    return {name: values[-1] for name, values in fields.items()}
