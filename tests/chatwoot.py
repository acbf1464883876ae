"""Chatwoot webhook fixtures as Chatwoot sends them: compact, escaped like Rails, signed."""

from __future__ import annotations

import copy
import json
import time
import uuid
from pathlib import Path
from typing import Any

from ingress.signatures import sign_chatwoot

FIXTURES = Path(__file__).parent / "fixtures" / "chatwoot"
SECRET = "whsec_test_2f9c1b7e"


def payload(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return copy.deepcopy(loaded)


def webhook_names() -> list[str]:
    return sorted(p.stem for p in FIXTURES.glob("*.json") if not p.stem.startswith("api_"))


def rails_json(data: object) -> bytes:
    """Compact JSON with <, > and & escaped as Rails does (they only occur inside strings)."""
    raw = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
    return raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def headers(
    body: bytes, *, secret: str | None = SECRET, timestamp: int | None = None
) -> dict[str, str]:
    out = {"content-type": "application/json", "x-chatwoot-delivery": str(uuid.uuid4())}
    if secret is not None:
        stamp = str(timestamp if timestamp is not None else int(time.time()))
        out["x-chatwoot-timestamp"] = stamp
        out["x-chatwoot-signature"] = sign_chatwoot(body, secret, stamp)
    return out
