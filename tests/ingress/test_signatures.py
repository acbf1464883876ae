"""Chatwoot signature checks, over raw bytes."""

from __future__ import annotations

from typing import Any

import pytest

from ingress.signatures import Key, sign_chatwoot, verify_chatwoot

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
    args["secrets"] = [s if isinstance(s, Key) else Key(secret=s.encode()) for s in args["secrets"]]
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


NOT_HEX = "sha256=" + "g" * 64
BAD_HEADERS = [
    pytest.param({"signature": "sha256=" + "é" * 64}, "signature is not sha256=<hex>",
                 id="sig-latin1"),
    pytest.param({"signature": "sha256=" + "\u0663" * 64}, "signature is not sha256=<hex>",
                 id="sig-arabic-digits"),
    pytest.param({"signature": VECTOR_SIGNATURE[:-1] + "\udc80"}, "signature is not sha256=<hex>",
                 id="sig-lone-surrogate"),
    pytest.param({"signature": NOT_HEX}, "signature is not sha256=<hex>", id="sig-not-hex"),
    pytest.param({"signature": "sha256="}, "signature is not sha256=<hex>", id="sig-prefix-only"),
    pytest.param({"signature": VECTOR_SIGNATURE + "00"}, "signature is not sha256=<hex>",
                 id="sig-too-long"),
    pytest.param({"signature": VECTOR_SIGNATURE + "\n"}, "signature is not sha256=<hex>",
                 id="sig-trailing-newline"),
    pytest.param({"signature": "sha256=" + "a" * 1_000_000}, "signature is not sha256=<hex>",
                 id="sig-huge"),
    pytest.param({"signature": ""}, "missing signature headers", id="sig-empty"),
    pytest.param({"signature": "SHA256=" + VECTOR_SIGNATURE[7:]}, "signature is not sha256=<hex>",
                 id="sig-prefix-case"),
    pytest.param({"timestamp": ""}, "missing signature headers", id="ts-empty"),
    pytest.param({"timestamp": f" {STAMP}"}, "timestamp is not a unix time", id="ts-space"),
    pytest.param({"timestamp": f"{STAMP}\n"}, "timestamp is not a unix time", id="ts-newline"),
    pytest.param({"timestamp": f"+{STAMP}"}, "timestamp is not a unix time", id="ts-plus"),
    pytest.param({"timestamp": "-1"}, "timestamp is not a unix time", id="ts-negative"),
    pytest.param({"timestamp": f"{STAMP}.0"}, "timestamp is not a unix time", id="ts-float"),
    pytest.param({"timestamp": str(STAMP).translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩"))},
                 "timestamp is not a unix time", id="ts-arabic-digits"),
    pytest.param({"timestamp": "１７８１７７５９１１"}, "timestamp is not a unix time",
                 id="ts-fullwidth-digits"),
    pytest.param({"timestamp": "9" * 5000}, "timestamp is not a unix time", id="ts-huge"),
    pytest.param({"timestamp": "é"}, "timestamp is not a unix time", id="ts-latin1"),
]  # fmt: skip


@pytest.mark.parametrize(("overrides", "reason"), BAD_HEADERS)
def test_any_header_value_is_a_refusal_never_an_exception(
    overrides: dict[str, Any], reason: str
) -> None:
    """Odd header values (non-ASCII, empty, huge, non-hex, non-ASCII digits) are refused with
    a reason; none raises."""
    ok, _, why = check(**overrides)
    assert (ok, why) == (False, reason)


def test_uppercase_hex_still_verifies() -> None:
    """The hex digest is compared as bytes, so its letter case does not matter."""
    assert check(signature=PREFIX_UPPER)[0] is True


PREFIX_UPPER = "sha256=" + VECTOR_SIGNATURE[7:].upper()


@pytest.mark.parametrize(
    ("keys", "accounts", "ok"),
    [
        pytest.param([Key(secret=SECRET.encode(), account=3)], {3}, True, id="bound-own-account"),
        pytest.param([Key(secret=SECRET.encode(), account=3)], {7}, False, id="bound-other"),
        pytest.param([Key(secret=SECRET.encode(), account=3)], set(), False, id="bound-no-account"),
        pytest.param([Key(secret=SECRET.encode(), account=3)], {3, 7}, False, id="bound-mixed"),
        pytest.param([Key(secret=SECRET.encode())], {7}, True, id="plain-any-account"),
        pytest.param([Key(secret=SECRET.encode())], set(), True, id="plain-no-account"),
        pytest.param(
            [Key(secret=b"other", account=7), Key(secret=SECRET.encode(), account=3)],
            {3}, True, id="second-key-binds",
        ),
    ],
)  # fmt: skip
def test_account_bound_secrets(keys: list[Key], accounts: set[int], ok: bool) -> None:
    """A secret bound to account N verifies only bodies naming account N alone; a plain one any."""
    assert check(secrets=keys, accounts=frozenset(accounts))[0] is ok
