"""The README's worker app example, run as written: it accepts our signature, refuses others."""

from __future__ import annotations

import os
import re
import time
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from consumers import signing
from tests.services import ROOT

SECRET = signing.new_secret(bytes(range(32)))


def example() -> Any:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Agents over HTTP", 1)[1]
    [code] = [
        c for c in re.findall(r"```python\n(.*?)```", section, re.DOTALL) if "Starlette(" in c
    ]
    namespace: dict[str, Any] = {}
    os.environ["APP_SECRET"] = SECRET  # what the example reads; set before it runs
    try:
        exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    finally:
        del os.environ["APP_SECRET"]
    return namespace["app"]


@pytest.mark.parametrize(
    ("secret", "age_s", "status"),
    [
        pytest.param(SECRET, 0, 200, id="ours"),
        pytest.param(signing.new_secret(bytes(range(1, 33))), 0, 401, id="other-secret"),
        pytest.param(SECRET, 3600, 401, id="stale"),
        pytest.param(None, 0, 401, id="unsigned"),
    ],
)
async def test_the_readme_app_verifies_and_answers_inline(
    secret: str | None, age_s: int, status: int
) -> None:
    """Signed by us: 200 with an inline reply; anything else: 401."""
    app = example()
    body = b'{"turn": "3:7:9", "account": 3, "conversation": 7, "messages": [{"content": "hi"}]}'
    stamp = int(time.time()) - age_s
    headers = signing.headers(secret, "3:7:9", stamp, body) if secret else {}
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client,
    ):
        answer = await client.post("/turns", content=body, headers=headers)
    assert answer.status_code == status
    if status == 200:
        assert answer.json() == {"replies": [{"content": "You said: hi"}]}
