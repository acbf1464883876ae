"""The ingress runs on the fast stack it is installed with: uvloop, httptools, hiredis."""

from __future__ import annotations

import asyncio

import redis.utils
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ingress.app import create_app
from ingress.settings import Settings
from ingress.topology import Topology


def test_uvicorn_picks_httptools_and_uvloop(topology: Topology) -> None:
    """`python -m ingress` leaves loop and http at "auto": with uvicorn[standard] installed
    that means httptools parses requests and uvloop runs the loop."""
    settings = Settings(allow_unsigned_webhooks=True, redis_url="redis://127.0.0.1:1/0")
    config = uvicorn.Config(create_app(settings, topology), loop="auto", http="auto")
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    factory = config.get_loop_factory()
    assert factory is not None
    loop = factory()
    try:
        assert type(loop).__module__.startswith("uvloop")
        assert not isinstance(loop, asyncio.SelectorEventLoop)
    finally:
        loop.close()


def test_redis_replies_are_parsed_by_hiredis() -> None:
    """redis[hiredis]: replies are parsed in C, not by redis-py's Python parser."""
    assert redis.utils.HIREDIS_AVAILABLE
