"""Where a worker app's URL may point (pure but for the injected resolver): a URL is user input,
so a push must not become a request to our own network (SSRF).

https only unless `ALLOW_HTTP_APPS=1`; every address the host resolves to must be public unless
`ALLOW_PRIVATE_APPS=1`. Checked when an app is added and again before each send (DNS can
change), and the send goes to the address that was checked, not to a second lookup.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Sequence
from urllib.parse import urlsplit

import msgspec

MAX_URL_CHARS = 2048
# (host, port) → the addresses it resolves to, as strings; injected so tests need no DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressError(ValueError):
    """A URL we will not send to; the message says why in one line."""


class Policy(msgspec.Struct, frozen=True, kw_only=True):
    allow_http: bool = False
    allow_private: bool = False


class Target(msgspec.Struct, frozen=True, kw_only=True):
    """A checked URL: where to connect (`address`), and the name TLS and `Host` must carry."""

    url: str
    scheme: str
    host: str
    port: int
    address: str

    def pinned_url(self) -> str:
        """The URL with its host replaced by the checked address (no second DNS lookup)."""
        parts = urlsplit(self.url)
        ip = ipaddress.ip_address(self.address)
        host = f"[{ip}]" if ip.version == 6 else str(ip)
        netloc = f"{host}:{self.port}"
        return parts._replace(netloc=netloc).geturl()


def parse(url: str, policy: Policy) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL fit to send to, before any lookup."""
    if len(url) > MAX_URL_CHARS:
        raise EgressError(f"the URL is longer than {MAX_URL_CHARS} characters")
    if not url.isascii() or any(c.isspace() or ord(c) < 32 for c in url):
        raise EgressError("the URL holds spaces, control or non-ASCII characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressError(f"the URL is not valid: {exc}") from None
    if parts.scheme not in ("https", "http"):
        raise EgressError("the URL must start with https://")
    if parts.scheme == "http" and not policy.allow_http:
        raise EgressError("the URL must be https (set ALLOW_HTTP_APPS=1 to allow http)")
    if parts.username is not None or parts.password is not None:
        raise EgressError("the URL must not hold a user name or password")
    host = parts.hostname
    if not host:
        raise EgressError("the URL has no host")
    if parts.fragment:
        raise EgressError("the URL must not hold a #fragment")
    return parts.scheme, host, port or (443 if parts.scheme == "https" else 80)


def refused(address: str, policy: Policy) -> str | None:
    """Why we will not connect to `address`, or None."""
    try:
        ip: Address = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if policy.allow_private:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is loopback too
    for kind, flag in (
        ("loopback", ip.is_loopback),
        ("private", ip.is_private),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("unspecified", ip.is_unspecified),
        ("not globally routable", not ip.is_global),
    ):
        if flag:
            return f"{ip} is a {kind} address (set ALLOW_PRIVATE_APPS=1 to allow private addresses)"
    return None


async def check(url: str, policy: Policy, resolve: Resolver) -> Target:
    """A Target to send to, or EgressError. Every address of the host must pass: a name that
    resolves to one public and one private address could be answered with either."""
    scheme, host, port = parse(url, policy)
    try:
        addresses = list(await resolve(host, port))
    except OSError as exc:
        raise EgressError(f"the host {host!r} does not resolve: {exc}") from None
    if not addresses:
        raise EgressError(f"the host {host!r} does not resolve")
    for address in addresses:
        reason = refused(address, policy)
        if reason is not None:
            raise EgressError(f"the host {host!r} resolves to {reason}")
    return Target(url=url, scheme=scheme, host=host, port=port, address=addresses[0])
