"""Standard Webhooks signing: the spec's published test vector, secrets, verification."""

from __future__ import annotations

import pytest

from consumers import signing

# The Standard Webhooks specification's test vector (its reference libraries test the same).
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
TIMESTAMP = 1614265330
BODY = b'{"test": 2432232314}'
EXPECTED = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_published_test_vector() -> None:
    """Our signature is byte for byte the one the spec publishes."""
    assert signing.sign(SECRET, MSG_ID, TIMESTAMP, BODY) == EXPECTED


def test_headers_carry_id_timestamp_and_signature() -> None:
    """The three headers of a signed request."""
    assert signing.headers(SECRET, MSG_ID, TIMESTAMP, BODY) == {
        "webhook-id": MSG_ID,
        "webhook-timestamp": str(TIMESTAMP),
        "webhook-signature": EXPECTED,
    }


def headers(**changes: str) -> dict[str, str]:
    return {**signing.headers(SECRET, MSG_ID, TIMESTAMP, BODY), **changes}


@pytest.mark.parametrize(
    ("received", "body", "now", "ok"),
    [
        pytest.param(headers(), BODY, TIMESTAMP, True, id="valid"),
        pytest.param(
            headers(**{"webhook-signature": f"v1,bm9wZQ== {EXPECTED}"}),
            BODY,
            TIMESTAMP,
            True,
            id="one-of-several",
        ),  # fmt: skip
        pytest.param(headers(), b'{"test": 2432232315}', TIMESTAMP, False, id="tampered-body"),
        pytest.param(headers(), BODY, TIMESTAMP + 301, False, id="too-old"),
        pytest.param(headers(), BODY, TIMESTAMP - 301, False, id="from-the-future"),
        pytest.param(headers(**{"webhook-id": "msg_other"}), BODY, TIMESTAMP, False, id="other-id"),
        pytest.param(
            headers(**{"webhook-timestamp": "１２"}), BODY, TIMESTAMP, False, id="non-ascii"
        ),
        pytest.param(headers(**{"webhook-signature": ""}), BODY, TIMESTAMP, False, id="none"),
        pytest.param(headers(**{"webhook-signature": "v1,é"}), BODY, TIMESTAMP, False, id="junk"),
        pytest.param({}, BODY, TIMESTAMP, False, id="no-headers"),
    ],
)
def test_verify(received: dict[str, str], body: bytes, now: float, ok: bool) -> None:
    """Verification accepts exactly the authentic, fresh requests."""
    assert signing.verify([SECRET], received, body, now=now) is ok


def test_verify_with_a_rotated_secret() -> None:
    """Any one of several secrets verifies (rotation)."""
    other = signing.new_secret(bytes(range(32)))
    assert signing.verify([other, SECRET], headers(), BODY, now=TIMESTAMP)
    assert not signing.verify([other], headers(), BODY, now=TIMESTAMP)


def test_new_secret_round_trips() -> None:
    """A generated secret is whsec_ + base64 of its key."""
    key = bytes(range(32))
    secret = signing.new_secret(key)
    assert secret.startswith("whsec_")
    assert signing.key_of(secret) == key


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", id="no-prefix"),
        pytest.param("whsec_not base64!", id="not-base64"),
        pytest.param("whsec_c2hvcnQ=", id="too-short"),
        pytest.param("whsec_" + "A" * 200, id="too-long"),
    ],
)
def test_bad_secrets_are_refused_without_showing_them(secret: str) -> None:
    """A malformed secret is a clear error that never repeats the secret."""
    with pytest.raises(signing.SecretError) as caught:
        signing.key_of(secret)
    assert secret not in str(caught.value)


def test_masked_shows_no_part_of_the_secret() -> None:
    """A listing shows the scheme only."""
    assert signing.masked(SECRET) == "whsec_…"
