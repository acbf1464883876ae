"""Where a worker app's URL may point: https only, public addresses only (SSRF), unless allowed."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from consumers import egress

STRICT = egress.Policy()
OPEN = egress.Policy(allow_http=True, allow_private=True)


def resolver(*addresses: str) -> egress.Resolver:
    async def resolve(host: str, port: int) -> Sequence[str]:
        return addresses

    return resolve


async def failing(host: str, port: int) -> Sequence[str]:
    raise OSError("Name or service not known")


@pytest.mark.parametrize(
    ("url", "why"),
    [
        pytest.param("http://bot.example.com/x", "must be https", id="http"),
        pytest.param("ftp://bot.example.com/x", "must start with https://", id="ftp"),
        pytest.param("https://user:pw@bot.example.com/", "user name or password", id="userinfo"),
        pytest.param("https:///path", "no host", id="no-host"),
        pytest.param("https://bot.example.com:99999/", "not valid", id="bad-port"),
        pytest.param("https://bot.example.com/a b", "spaces", id="space"),
        pytest.param("https://bot.example.com/#x", "fragment", id="fragment"),
        pytest.param("https://bot.example.com/" + "a" * 3000, "longer than", id="long"),
    ],
)
async def test_malformed_urls_are_refused(url: str, why: str) -> None:
    """A URL we cannot or must not send to is refused with its reason."""
    with pytest.raises(egress.EgressError, match=why):
        await egress.check(url, STRICT, resolver("93.184.215.14"))


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("127.0.0.1", id="loopback"),
        pytest.param("10.1.2.3", id="private-10"),
        pytest.param("172.16.0.5", id="private-172"),
        pytest.param("192.168.1.1", id="private-192"),
        pytest.param("169.254.169.254", id="link-local-metadata"),
        pytest.param("100.64.0.1", id="shared-cgnat"),
        pytest.param("224.0.0.1", id="multicast"),
        pytest.param("240.0.0.1", id="reserved"),
        pytest.param("0.0.0.0", id="unspecified"),
        pytest.param("::1", id="v6-loopback"),
        pytest.param("fe80::1", id="v6-link-local"),
        pytest.param("fc00::1", id="v6-unique-local"),
        pytest.param("::ffff:127.0.0.1", id="v4-mapped-loopback"),
    ],
)
async def test_private_addresses_are_refused(address: str) -> None:
    """A host resolving to an address of our own network is refused (SSRF)."""
    with pytest.raises(egress.EgressError, match="ALLOW_PRIVATE_APPS"):
        await egress.check("https://bot.example.com/turns", STRICT, resolver(address))


async def test_one_private_address_among_public_ones_is_refused() -> None:
    """Every address must pass: the connection could go to any of them."""
    with pytest.raises(egress.EgressError):
        await egress.check(
            "https://bot.example.com/", STRICT, resolver("93.184.215.14", "10.0.0.1")
        )


async def test_a_public_host_passes_and_is_pinned() -> None:
    """A public address is the Target, and the URL sent to carries it, not the name."""
    target = await egress.check(
        "https://bot.example.com:8443/turns?x=1", STRICT, resolver("93.184.215.14")
    )
    assert (target.host, target.port, target.address) == ("bot.example.com", 8443, "93.184.215.14")
    assert target.pinned_url() == "https://93.184.215.14:8443/turns?x=1"


async def test_ipv6_is_bracketed_when_pinned() -> None:
    """An IPv6 address is written in brackets in the pinned URL."""
    target = await egress.check("https://bot.example.com/", STRICT, resolver("2606:4700::1"))
    assert target.pinned_url() == "https://[2606:4700::1]:443/"


async def test_allowed_when_asked() -> None:
    """ALLOW_HTTP_APPS and ALLOW_PRIVATE_APPS open http and local addresses (demo, tests)."""
    target = await egress.check("http://localhost:9000/t", OPEN, resolver("127.0.0.1"))
    assert target.pinned_url() == "http://127.0.0.1:9000/t"


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    """No address: a clear error naming the host."""
    with pytest.raises(egress.EgressError, match="does not resolve"):
        await egress.check("https://nowhere.invalid/", STRICT, failing)
    with pytest.raises(egress.EgressError, match="does not resolve"):
        await egress.check("https://nowhere.invalid/", STRICT, resolver())
