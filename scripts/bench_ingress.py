#!/usr/bin/env python3
"""Ingress throughput and latency, as ratios to baselines measured in the same run.

Four servers, each one uvicorn process (uvloop, httptools), take the same signed webhook
(a unique X-Chatwoot-Delivery per request) from `wrk`, a C load generator that is not the
bottleneck (installed with apt-get when missing):

- bare Starlette: reads the body, answers 200 (the ceiling of the stack);
- Starlette + one awaited XADD (the floor of "store in Redis before answering");
- a naive inline receiver, the usual bridge: verify the signature, INSERT the webhook into
  PostgreSQL in the request, one transaction each;
- Switchboard's ingress (`python -m ingress`: signature, routing view, dedup Lua XADD coalesced
  per loop tick, a JSON log line per webhook).

All four run at once, idle but for the one measured. Throughput at `-c CONCURRENCY` is measured
in interleaved rounds (best kept, with the server's own CPU time per request, which a busy
machine disturbs less than req/s), then latency percentiles at a fixed rate (a jittered Lua
`delay()` paces each connection; the achieved rate is printed).

    python scripts/bench_ingress.py               # 3 rounds of 5 s per server, -c32, 1,000 req/s
    python scripts/bench_ingress.py --rounds 1 --duration 3 --only xadd --only ingress
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from consumers.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from ingress.signatures import sign_chatwoot  # noqa: E402

SECRET = "bench-secret"
FIXTURE = ROOT / "tests/fixtures/chatwoot/message_created__whatsapp_incoming_phone.json"
BODY = b" ".join(FIXTURE.read_bytes().split())  # compact, as Chatwoot sends it
SERVERS = ("bare", "xadd", "naive", "ingress")
NAMES = {"bare": "bare Starlette", "xadd": "Starlette + XADD", "naive": "naive inline receiver",
         "ingress": "Switchboard ingress"}  # fmt: skip

# Each connection sends the same signed body with its own delivery id: the signature covers
# the timestamp and the body, not the delivery header, so one signature serves the whole run
# and no request is a duplicate. `delay()` (when RATE_DELAY_MS > 0) paces each connection.
LUA = """
local body = [==[%(body)s]==]
local counter = 0
local thread_number = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end
function init(args)
  wrk.method = "POST"
  wrk.path = "/webhooks/chatwoot"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Chatwoot-Timestamp"] = "%(stamp)s"
  wrk.headers["X-Chatwoot-Signature"] = "%(signature)s"
end
function request()
  counter = counter + 1
  wrk.headers["X-Chatwoot-Delivery"] = "%(run)s-" .. thread_number .. "-" .. counter
  return wrk.format()
end
%(delay)s
function done(summary, latency, requests)
  io.write(string.format("non-200: %%d\\n", summary.errors.status))
end
"""


def lua_script(path: Path, *, delay_ms: float) -> Path:
    stamp = str(int(time.time()))
    # Jittered (uniform, mean delay_ms): connections paced in phase would arrive in bursts.
    pace = f"function delay() return {delay_ms:.3f} * (0.5 + math.random()) end"
    delay = pace if delay_ms > 0 else ""
    signature = sign_chatwoot(BODY, SECRET, stamp)
    path.write_text(LUA % {"body": BODY.decode(), "stamp": stamp, "run": f"bench{stamp}",
                           "signature": signature, "delay": delay})  # fmt: skip
    return path


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it from Debian's packages (apt-get)", flush=True)  # noqa: T201
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("apt-get installed no wrk")
    return found


# --- the baseline servers (run in their own process: `--serve NAME`) -------------------------


def serve(kind: str, port: int, redis_url: str, database_url: str) -> None:
    import asyncpg
    import redis.asyncio as aioredis
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ingress.signatures import Key, verify_chatwoot

    client = aioredis.Redis.from_url(redis_url)
    keys = [Key(secret=SECRET.encode(), account=None)]
    pool: list[asyncpg.Pool] = []

    async def bare(request: Request) -> Response:
        await request.body()
        return JSONResponse({"ok": True})

    async def xadd(request: Request) -> Response:
        body = await request.body()
        entry: Any = await client.xadd("bench:baseline", {"body": body})
        return JSONResponse({"entry": entry.decode()})

    async def naive(request: Request) -> Response:
        body = await request.body()
        check = verify_chatwoot(
            body, timestamp=request.headers.get("x-chatwoot-timestamp"),
            signature=request.headers.get("x-chatwoot-signature"), secrets=keys,
            accounts=frozenset(), now=time.time(), tolerance_s=300,
        )  # fmt: skip
        if not check.ok:
            return JSONResponse({"error": check.reason}, status_code=401)
        async with pool[0].acquire() as conn, conn.transaction():
            row = await conn.fetchval(
                "INSERT INTO webhooks (delivery, body) VALUES ($1, $2::jsonb) RETURNING id",
                request.headers.get("x-chatwoot-delivery", ""), body.decode(),
            )  # fmt: skip
        return JSONResponse({"id": row})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if kind == "naive":
            pool.append(await asyncpg.create_pool(database_url, min_size=10, max_size=10))
            await pool[0].execute(
                "CREATE TABLE IF NOT EXISTS webhooks (id bigserial PRIMARY KEY, "
                "delivery text NOT NULL, body jsonb NOT NULL, "
                "received_at timestamptz NOT NULL DEFAULT now())"
            )
        yield

    handler = {"bare": bare, "xadd": xadd, "naive": naive}[kind]
    app = Starlette(routes=[Route("/webhooks/chatwoot", handler, methods=["POST"])],
                    lifespan=lifespan)  # fmt: skip
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- the measuring process ----------------------------------------------------------------


def wait_listening(port: int, server: subprocess.Popen[bytes]) -> None:
    async def probe() -> bool:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return False
        writer.close()
        return True

    for _ in range(400):
        if server.poll() is not None:
            raise SystemExit(f"the server on {port} exited with {server.returncode}")
        if asyncio.run(probe()):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


class Result:
    def __init__(self, output: str) -> None:
        self.output = output
        rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
        self.rate = float(rate.group(1)) if rate else 0.0
        self.percentiles = {
            int(p): _ms(value, unit)
            for p, value, unit in re.findall(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        }
        errors = re.search(r"non-200: (\d+)", output)
        failed = re.search(r"Socket errors: .*", output)
        self.non_200 = int(errors.group(1)) if errors else 0
        total = re.search(r"(\d+) requests in", output)
        self.requests = int(total.group(1)) if total else 0
        self.cpu_us = 0.0  # the server's CPU time per request (user + system), in µs
        self.socket_errors = failed.group(0) if failed else ""


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (Linux; the field after the command's ')')."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(wrk: str, port: int, script: Path, *, connections: int, threads: int,
            duration: int) -> Result:  # fmt: skip
    args = [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency",
            "-s", str(script), f"http://127.0.0.1:{port}/webhooks/chatwoot"]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, check=True)
    return Result(done.stdout)


class Server:
    """One server under test, its process started once and measured in every round."""

    def __init__(self, kind: str, env: dict[str, str], redis_url: str, database_url: str) -> None:
        self.kind = kind
        self.port = free_port()
        if kind == "ingress":
            args = [sys.executable, "-m", "ingress", "--port", str(self.port)]
        else:
            args = [sys.executable, __file__, "--serve", kind, "--port", str(self.port),
                    "--redis", redis_url, "--database", database_url]  # fmt: skip
        self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)  # fmt: skip

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()

    def flat_out(self, wrk: str, script: Path, opts: argparse.Namespace, duration: int) -> Result:
        """As fast as it answers, with the server's own CPU time per request: a figure that
        holds on a busy machine, where req/s also measures what else the cores are doing."""
        before = _cpu_seconds(self.process.pid)
        result = run_wrk(wrk, self.port, script, connections=opts.concurrency,
                         threads=opts.threads, duration=duration)  # fmt: skip
        spent = _cpu_seconds(self.process.pid) - before
        result.cpu_us = 1e6 * spent / max(1, result.requests)
        return result


def measure(servers: list[Server], opts: argparse.Namespace, wrk: str,
            workdir: Path) -> dict[str, tuple[Result, Result]]:  # fmt: skip
    """Rounds of each server in turn, the best round kept: a neighbour's burst on a shared
    machine then costs one round of one server, not the comparison."""
    flat = {s.kind: lua_script(workdir / f"{s.kind}-max.lua", delay_ms=0) for s in servers}
    for server in servers:
        wait_listening(server.port, server.process)
        server.flat_out(wrk, flat[server.kind], opts, 1)  # warm-up: pools, the script cache
    best: dict[str, Result] = {}
    for round_number in range(1, opts.rounds + 1):
        for server in servers:
            print(f"round {round_number}: {NAMES[server.kind]} ...", flush=True)  # noqa: T201
            result = server.flat_out(wrk, flat[server.kind], opts, opts.duration)
            if server.kind not in best or result.rate > best[server.kind].rate:
                best[server.kind] = result
    # Fixed rate: each paced connection waits about delay_ms between a response and its next
    # request; the millisecond taken off stands for the response time, so that the achieved
    # rate (printed) is close to the target when the server keeps up.
    delay_ms = max(0.1, 1000 * opts.paced_connections / opts.rate - 1)
    results = {}
    for server in servers:
        print(f"fixed rate: {NAMES[server.kind]} ...", flush=True)  # noqa: T201
        paced = run_wrk(wrk, server.port,
                        lua_script(workdir / f"{server.kind}-paced.lua", delay_ms=delay_ms),
                        connections=opts.paced_connections, threads=1,
                        duration=opts.duration)  # fmt: skip
        results[server.kind] = (best[server.kind], paced)
    return results


def report(results: dict[str, tuple[Result, Result]], opts: argparse.Namespace) -> None:
    rate = {kind: results[kind][0].rate for kind in results}
    print(f"\nthroughput: wrk -t{opts.threads} -c{opts.concurrency} -d{opts.duration}s, "  # noqa: T201
          f"best of {opts.rounds} interleaved rounds; signed, unique delivery ids")  # fmt: skip
    print(f"{'server':<24}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/req':>12}"  # noqa: T201
          f"{'non-200':>9}")  # fmt: skip
    for kind, (flat_out, _) in results.items():
        print(f"{NAMES[kind]:<24}{flat_out.rate:>9.0f}{flat_out.percentiles.get(50, 0):>9.2f}"  # noqa: T201
              f"{flat_out.percentiles.get(99, 0):>9.2f}{flat_out.cpu_us:>12.0f}"
              f"{flat_out.non_200:>9}")  # fmt: skip
    print(f"\nlatency at a fixed rate: {opts.rate} req/s target, "  # noqa: T201
          f"{opts.paced_connections} paced connections")  # fmt: skip
    print(f"{'server':<24}{'req/s':>9}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")  # noqa: T201
    for kind, (_, paced) in results.items():
        cuts = paced.percentiles
        print(f"{NAMES[kind]:<24}{paced.rate:>9.0f}{cuts.get(50, 0):>9.2f}"  # noqa: T201
              f"{cuts.get(90, 0):>9.2f}{cuts.get(99, 0):>9.2f}")  # fmt: skip
    if "ingress" not in rate:
        return
    ingress = rate["ingress"]
    print("\nratios (ingress throughput / baseline), target in brackets")  # noqa: T201
    for kind, target in (("xadd", 1.0), ("bare", 0.6), ("naive", 3.0)):
        if rate.get(kind):
            ratio = ingress / rate[kind]
            mark = "ok" if ratio >= target else "BELOW"
            print(f"  vs {NAMES[kind]:<24}{ratio:>6.2f}x  (>= {target}x) {mark}")  # noqa: T201
    cpu = {kind: results[kind][0].cpu_us for kind in results}
    for kind in ("xadd", "bare"):
        if cpu.get(kind):
            print(f"  CPU per request vs {NAMES[kind]:<16}{cpu['ingress'] / cpu[kind]:>6.2f}x "  # noqa: T201
                  "(the server process only; Redis and PostgreSQL not counted)")  # fmt: skip
    p99 = results["ingress"][1].percentiles.get(99, 0)
    print(f"  ingress p99 at {opts.rate} req/s  {p99:.2f} ms (<= 10 ms) "  # noqa: T201
          f"{'ok' if p99 <= 10 else 'ABOVE'}")  # fmt: skip
    if rate.get("bare"):
        print(f"  bare Starlette {rate['bare']:.0f} req/s (>= 10k shows wrk is not the "  # noqa: T201
              "bottleneck)")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="throughput rounds; best kept")
    parser.add_argument("--concurrency", type=int, default=32, help="connections, throughput")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads (one core: 1)")
    parser.add_argument("--rate", type=int, default=1000, help="req/s of the latency run")
    parser.add_argument("--paced-connections", type=int, default=20)
    parser.add_argument("--only", choices=SERVERS, action="append", help="measure only these")
    parser.add_argument("--serve", choices=["bare", "xadd", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--redis", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve, opts.port, opts.redis, opts.database)
        return 0
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-ingress-"))
    kinds = [k for k in SERVERS if not opts.only or k in opts.only]
    with EmbeddedRedis(workdir / "redis") as redis_server, \
            EmbeddedPostgres(workdir / "postgres") as postgres:  # fmt: skip
        streams = workdir / "streams.yaml"
        streams.write_text(
            (ROOT / "streams.yaml").read_text().replace("prefix: sb", "prefix: bench")
        )
        env = dict(os.environ, REDIS_URL=redis_server.url, CHATWOOT_WEBHOOK_SECRETS=SECRET,
                   LOG_FORMAT="json", SWITCHBOARD_STREAMS=str(streams),
                   SWITCHBOARD_HOME=str(workdir / "home"))  # fmt: skip
        servers = [Server(kind, env, redis_server.url, postgres.url()) for kind in kinds]
        try:
            results = measure(servers, opts, wrk, workdir)
        finally:
            for server in servers:
                server.stop()
    report(results, opts)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
