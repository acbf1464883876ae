#!/usr/bin/env python3
"""Ingress throughput and latency, as ratios to baselines measured in the same run.

Three servers, each a uvicorn process on one core's worth of work, take the same signed
webhooks from one load process: a bare Starlette endpoint that reads the body (the floor of the
stack), the same plus one awaited XADD (the floor of "store before answering"), and the real
ingress (`python -m ingress`: signature, routing view, dedup Lua XADD, a log line).

    python scripts/bench_ingress.py --requests 20000 --concurrency 32
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from consumers.embedded import EmbeddedRedis, free_port  # noqa: E402
from ingress.signatures import sign_chatwoot  # noqa: E402

SECRET = "bench-secret"
BODY = (ROOT / "tests/fixtures/chatwoot/message_created__whatsapp_incoming_phone.json").read_bytes()


def serve_baseline(port: int, redis_url: str | None) -> None:
    """The baselines: read the body, (XADD it), answer 200."""
    import redis.asyncio as aioredis
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    client = aioredis.Redis.from_url(redis_url) if redis_url else None

    async def webhook(request: Request) -> JSONResponse:
        body = await request.body()
        if client is not None:
            await client.xadd("bench:baseline", {"body": body})
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/webhooks/chatwoot", webhook, methods=["POST"])])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def _connection(
    host: str, port: int, requests: list[bytes], latencies: list[float], statuses: list[int]
) -> None:
    """One keep-alive HTTP/1.1 connection sending its share of requests, one at a time. Raw
    sockets: a full HTTP client costs more per request than the servers being measured."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            statuses.append(int(head.split(b" ", 2)[1]))
    finally:
        writer.close()


def _request(port: int, n: int, body: bytes) -> bytes:
    stamp = str(int(time.time()))
    headers = (
        f"POST /webhooks/chatwoot HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"X-Chatwoot-Delivery: bench-{n}\r\nX-Chatwoot-Timestamp: {stamp}\r\n"
        f"X-Chatwoot-Signature: {sign_chatwoot(body, SECRET, stamp)}\r\n\r\n"
    )
    return headers.encode() + body


async def _ready(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


async def load(port: int, requests: int, concurrency: int) -> tuple[float, list[float]]:
    body = b" ".join(BODY.split())  # compact, as Chatwoot sends it
    await _ready(port)
    prepared = [_request(port, n, body) for n in range(requests)]
    shares = [prepared[i::concurrency] for i in range(concurrency)]
    latencies: list[float] = []
    statuses: list[int] = []
    started = time.perf_counter()
    await asyncio.gather(
        *(_connection("127.0.0.1", port, share, latencies, statuses) for share in shares)
    )
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)
    return requests / elapsed, latencies


def measure(name: str, args: list[str], env: dict[str, str], port: int, opts: argparse.Namespace
            ) -> tuple[str, float, list[float]]:  # fmt: skip
    server = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        rate, latencies = asyncio.run(load(port, opts.requests, opts.concurrency))
    finally:
        server.terminate()
        server.wait()
    return name, rate, latencies


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--serve", choices=["bare", "xadd"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve_baseline(opts.port, opts.redis if opts.serve == "xadd" else None)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-"))
    with EmbeddedRedis(workdir / "redis") as redis_server:
        me = [sys.executable, __file__]
        runs = []
        for name, extra in (("bare Starlette", ["--serve", "bare"]),
                            ("Starlette + XADD", ["--serve", "xadd"])):  # fmt: skip
            port = free_port()
            args = [*me, *extra, "--port", str(port), "--redis", redis_server.url]
            runs.append(measure(name, args, dict(os.environ), port, opts))
        port = free_port()
        streams = workdir / "streams.yaml"
        streams.write_text(
            (ROOT / "streams.yaml").read_text().replace("prefix: sb", "prefix: bench")
        )
        env = dict(os.environ, REDIS_URL=redis_server.url, CHATWOOT_WEBHOOK_SECRETS=SECRET,
                   PORT=str(port), LOG_FORMAT="json", SWITCHBOARD_STREAMS=str(streams),
                   SWITCHBOARD_HOME=str(workdir / "home"))  # fmt: skip
        runs.append(measure("Switchboard ingress", [sys.executable, "-m", "ingress"], env, port,
                            opts))  # fmt: skip
    base_rate = runs[0][1]
    print(f"{opts.requests} signed webhooks, {opts.concurrency} concurrent, one load process")
    print(f"{'server':<22}{'req/s':>9}{'vs bare':>9}{'vs +XADD':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, rate, latencies in runs:
        cuts = statistics.quantiles(latencies, n=100)
        print(f"{name:<22}{rate:>9.0f}{rate / base_rate:>9.2f}{rate / runs[1][1]:>10.2f}"
              f"{cuts[49] * 1000:>9.2f}{cuts[98] * 1000:>9.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
