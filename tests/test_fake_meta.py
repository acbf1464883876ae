"""The fake Meta, as the end-to-end tests and the README use it: a real server process."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ingress import signatures
from tests import services

TOKEN = "graph-token"


@pytest.fixture
def fake(workdir: Path) -> Iterator[str]:
    port = services.free_port()
    process = services.Process(
        "fake-meta-selftest",
        services.python("scripts/fake_meta.py", "serve", "--port", str(port), "--token", TOKEN,
                        "--media", '{"179": "1784"}'),
        {},
        workdir,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    services.wait_http(f"{url}/_fake/requests", process)
    yield url
    process.stop()


def test_owner_lookup_errors_and_faults(fake: str) -> None:
    """Known media → its owner (token as Bearer or parameter); unknown → code 100; wrong
    token → 190; a fault rule answers its status and code, `times` times."""
    bearer = {"authorization": f"Bearer {TOKEN}"}
    ok = httpx.get(f"{fake}/v21.0/179", params={"fields": "owner"}, headers=bearer)
    assert ok.json() == {"owner": {"id": "1784"}, "id": "179"}
    param = httpx.get(f"{fake}/v21.0/179", params={"fields": "owner", "access_token": TOKEN})
    assert param.status_code == 200
    unknown = httpx.get(f"{fake}/v21.0/180", headers=bearer)
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (400, 100)
    wrong = httpx.get(f"{fake}/v21.0/179", headers={"authorization": "Bearer nope"})
    assert wrong.json()["error"]["code"] == 190
    rule = {"path": "/179", "status": 400, "code": 4, "times": 1, "retry_after": 2}
    httpx.post(f"{fake}/_fake/faults", json={"rules": [rule]}).raise_for_status()
    limited = httpx.get(f"{fake}/v21.0/179", headers=bearer)
    assert (limited.json()["error"]["code"], limited.headers["retry-after"]) == (4, "2")
    assert httpx.get(f"{fake}/v21.0/179", headers=bearer).status_code == 200
    recorded = httpx.get(f"{fake}/_fake/requests").json()
    assert [r["authorized"] for r in recorded] == [True, True, True, False, True, True]


def test_send_posts_a_signed_comment_as_meta_does(fake: str) -> None:
    """`fake_meta.py send` posts the same signed, ASCII-escaped body `--times` times."""
    done = subprocess.run(
        services.python("scripts/fake_meta.py", "send", "--url", f"{fake}/apps/sink",
                        "--secret", "s3cret", "--media", "179", "--comment", "42",
                        "--times", "2"),
        cwd=services.ROOT, capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout == "200 200\n"
    first, second = httpx.get(f"{fake}/_fake/requests").json()
    assert first["body"] == second["body"] and first["body"].isascii()
    assert "\\/" in first["body"] and '"media": {"id": "179"' in first["body"]
    check = signatures.verify_meta(
        first["body"].encode(),
        signature=first["headers"]["x-hub-signature-256"],
        secret=b"s3cret",
    )
    assert check.ok
