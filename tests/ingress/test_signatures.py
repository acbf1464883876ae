"""Chatwoot signature checks, over raw bytes."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.signatures import sign_chatwoot, verify_chatwoot

VECTOR_BODY = (
    b'{"event":"message_created","id":918316,"content":"Ol\xc3\xa1 \\u003cb\\u003emundo'
    b'\\u003c/b\\u003e \\u0026 tudo","created_at":"2026-06-18T09:45:10.918Z","private":false}'
)
VECTOR_SIGNATURE = "sha256=742cae180f8e0e6456060ecc832fa9ca874df2a1faf3d4a6ad18100d4861a511"
SECRET = "whsec_test_2f9c1b7e"
STAMP = 1781775911


def test_matches_the_chatwoot_md_test_vector() -> None:
    """The signature of the documented body, secret and timestamp is the documented one."""
    assert sign_chatwoot(VECTOR_BODY, SECRET, STAMP) == VECTOR_SIGNATURE


def check(body: bytes = VECTOR_BODY, **overrides: Any) -> tuple[bool, bool, str]:
    args: dict[str, Any] = {
        "timestamp": str(STAMP),
        "signature": VECTOR_SIGNATURE,
        "secrets": [SECRET],
        "now": STAMP + 10,
    }
    args.update(overrides)
    result = verify_chatwoot(body, **args)
    return result.ok, result.signed, result.reason


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param({}, (True, True, ""), id="valid"),
        pytest.param({"secrets": ["old", SECRET]}, (True, True, ""), id="rotation-any-secret"),
        pytest.param({"secrets": []}, (True, False, "no secret configured"), id="no-secret"),
        pytest.param(
            {"signature": None}, (False, False, "missing signature headers"), id="no-signature"
        ),
        pytest.param(
            {"timestamp": None}, (False, False, "missing signature headers"), id="no-timestamp"
        ),
        pytest.param(
            {"timestamp": "yesterday"},
            (False, True, "timestamp is not a unix time"),
            id="bad-timestamp",
        ),
        pytest.param(
            {"now": STAMP + 301}, (False, True, "timestamp outside tolerance"), id="replayed"
        ),
        pytest.param(
            {"now": STAMP - 301}, (False, True, "timestamp outside tolerance"), id="from-future"
        ),
        pytest.param(
            {"signature": VECTOR_SIGNATURE[7:]},
            (False, True, "signature is not sha256=<hex>"),
            id="no-prefix",
        ),
        pytest.param(
            {"secrets": ["wrong"]}, (False, True, "signature does not match"), id="wrong-secret"
        ),
    ],
)
def test_verdicts(overrides: dict[str, Any], expected: tuple[bool, bool, str]) -> None:
    """Each header problem is refused with its own reason; any configured secret verifies."""
    assert check(**overrides) == expected


def test_reserialised_json_does_not_verify() -> None:
    """Re-encoding the body (unescaped <, >, &) changes the bytes, so it must not verify."""
    reencoded = VECTOR_BODY.replace(b"\\u003c", b"<").replace(b"\\u003e", b">")
    assert check(reencoded)[:2] == (False, True)


def test_timestamp_is_part_of_the_signed_text() -> None:
    """A valid signature moved to another timestamp fails."""
    assert check(timestamp=str(STAMP + 1))[0] is False
