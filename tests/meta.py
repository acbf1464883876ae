"""Meta webhook bodies for the tests, as Meta sends them (non-ASCII as \\uXXXX, `/` as `\\/`)."""

from __future__ import annotations

import json
import time
from typing import Any

from ingress import events, meta, signatures

APP_SECRET = "meta-app-secret-5d1e"
VERIFY_TOKEN = "verify-me-81c2"
ACCESS_TOKEN = "EAAG-graph-token-93f1"
OWNER = "17841400000000001"


def change(media: str, comment_id: str, *, field: str = "comments") -> dict[str, Any]:
    return {
        "field": field,
        "value": {
            "from": {"id": "232323", "username": "caf\u00e9_fan"},
            "media": {"id": media, "media_product_type": "FEED"},
            "id": comment_id,
            "text": "Pr\u00e9cio? https://x.y/z",
        },
    }


def webhook(*changes: dict[str, Any], account: str = OWNER, at: int = 1_763_800_000) -> bytes:
    """An `instagram` webhook holding `changes` in one entry."""
    data = {
        "object": "instagram",
        "entry": [{"id": account, "time": at, "changes": list(changes)}],
    }
    return json.dumps(data, ensure_ascii=True).replace("/", "\\/").encode()


def comment(media: str = "17900000000000001", comment_id: str = "18000000000000001") -> bytes:
    return webhook(change(media, comment_id))


def headers(body: bytes, secret: str = APP_SECRET) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "x-hub-signature-256": signatures.sign_meta(body, secret),
    }


def entry(body: bytes) -> events.EventEntry:
    """The sb:events entry the ingress writes for `body`."""
    return events.EventEntry(
        source=meta.SOURCE,
        event=meta.event_name(body) or "meta",
        delivery=meta.delivery_id(body),
        received_at=int(time.time() * 1000),
        signed=True,
        body=body,
    )
