#!/usr/bin/env python3
"""Deliver throughput from a backlog, as a ratio to a baseline measured in the same run.

A backlog of replies over many conversations is XADDed to `sb:outbound`, then ONE
`switchboard consume deliver` process is started and timed until every reply is `sent` in
`outbound` and the fake Chatwoot has received it. Rate limits are raised in the benchmark's
streams.yaml (host and conversation limits far above the rate reached), so what is measured
is the deliverer, not the throttle. The baseline (the ceiling) is the same number of POSTs
sent by a bare `httpx.AsyncClient` loop with the deliver group's concurrency (its batch size:
partitions of one batch are handled concurrently) to the same fake. The fake's own ceiling is
measured first with `wrk` (a C load generator, installed from Debian's packages when missing),
POSTing created messages over as many keep-alive connections: the fake must sit well above
what either sender reaches, or the benchmark measures the fake.

The fake runs in its own process with uvloop and httptools, without echo webhooks, its stdout
thrown away: its CPU share is printed, so a fake that is the bottleneck shows.

    python scripts/bench_deliver.py --replies 20000 --conversations 2000   # the figures
    python scripts/bench_deliver.py --replies 2000                          # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from consumers.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from consumers.store import Store  # noqa: E402
from ingress import events, topology  # noqa: E402

TOKEN, ACCOUNT = "bench-bot", 1
RAISED = (
    ("host_limit: {per_minute: 2400}", "host_limit: {per_minute: 60000000}"),
    ("conversation_limit: {per_minute: 180, burst: 20}",
     "conversation_limit: {per_minute: 60000000, burst: 100000}"),
)  # fmt: skip


# wrk's script: created messages over many conversations, each with its own ext_ref.
WRK_LUA = """
local counter = 0
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["api_access_token"] = "%(token)s"
end
function request()
  counter = counter + 1
  local conversation = 100 + counter %% %(conversations)d
  local path = "/api/v1/accounts/%(account)d/conversations/" .. conversation .. "/messages"
  local body = '{"content":"wrk ' .. counter .. '","message_type":"outgoing","private":false,'
    .. '"content_type":"text","content_attributes":{"ext_ref":"w' .. counter .. '"}}'
  return wrk.format(nil, path, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("non-2xx: %%d\\n", summary.errors.status))
end
"""


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found: installing it from Debian's packages (apt-get)", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "wrk"], check=True)
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("apt-get installed no wrk")
    return found


def fake_ceiling(fake: str, workdir: Path, conversations: int, connections: int) -> float:
    """Created messages/s the fake answers to `wrk` (one thread, `connections` keep-alive)."""
    script = workdir / "create.lua"
    script.write_text(WRK_LUA % {"token": TOKEN, "account": ACCOUNT,
                                 "conversations": conversations})  # fmt: skip
    done = subprocess.run([ensure_wrk(), "-t1", f"-c{connections}", "-d5s", "-s", str(script),
                           fake], capture_output=True, text=True, check=True)  # fmt: skip
    rate = re.search(r"Requests/sec:\s+([\d.]+)", done.stdout)
    errors = re.search(r"non-2xx: (\d+)", done.stdout)
    if rate is None or errors is None or int(errors[1]):
        raise SystemExit(f"wrk against the fake failed:\n{done.stdout}{done.stderr}")
    return float(rate[1])


def streams_yaml(workdir: Path, batch: int | None) -> Path:
    text = (ROOT / "streams.yaml").read_text()
    group = "stream: outbound\n    batch: 16"
    for old, new in (
        *RAISED,
        *([(group, f"stream: outbound\n    batch: {batch}")] if batch else []),
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = workdir / "streams.yaml"
    path.write_text(text)
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def message_path(conversation: int) -> str:
    return f"/api/v1/accounts/{ACCOUNT}/conversations/{conversation}/messages"


async def baseline(fake: str, replies: int, conversations: int, concurrency: int) -> float:
    """The ceiling: bare POSTs with the deliverer's concurrency, nothing else per reply."""
    queue = iter(range(replies))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=fake, headers={"api_access_token": TOKEN},
                                 limits=limits) as client:  # fmt: skip

        async def worker() -> None:
            for n in queue:
                response = await client.post(
                    message_path(100 + n % conversations),
                    json={"content": f"baseline {n}", "content_attributes": {"ext_ref": f"b{n}"}},
                )
                response.raise_for_status()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return replies / (time.perf_counter() - started)


async def fill(redis_url: str, key: str, replies: int, conversations: int) -> None:
    redis = aioredis.Redis.from_url(redis_url)
    try:
        for start in range(0, replies, 1000):
            pipe = redis.pipeline(transaction=False)
            for n in range(start, min(start + 1000, replies)):
                entry = events.OutboundEntry(account=ACCOUNT, conversation=100 + n % conversations,
                                             content=f"reply {n}", ref=f"bench-{n}")  # fmt: skip
                pipe.xadd(key, events.encode(entry))  # type: ignore[arg-type]
            await pipe.execute()
    finally:
        await redis.aclose()


async def sent(database: str) -> int:
    conn = await asyncpg.connect(database)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM outbound WHERE status = 'sent'"))
    finally:
        await conn.close()


async def drain(database: str, replies: int, deliver: subprocess.Popen[bytes]) -> float:
    """Replies/s from the first `sent` row to the last (the process's start-up not counted)."""
    conn = await asyncpg.connect(database)
    try:
        first: tuple[float, int] | None = None
        while True:
            count = int(await conn.fetchval("SELECT count(*) FROM outbound WHERE status = 'sent'"))
            now = time.perf_counter()
            if first is None and count > 0:
                first = (now, count)
            if count >= replies:
                break
            if deliver.poll() is not None:
                raise SystemExit(f"deliver exited ({deliver.returncode}) at {count} sent")
            await asyncio.sleep(0.05)
        assert first is not None
        return (replies - first[1]) / (now - first[0])
    finally:
        await conn.close()


def fake_received(fake: str) -> int:
    requests = httpx.get(f"{fake}/_fake/requests", timeout=60).json()
    return sum(1 for r in requests if r["method"] == "POST" and r["path"].endswith("/messages"))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--replies", type=int, default=20_000)
    parser.add_argument("--conversations", type=int, default=2_000)
    parser.add_argument("--batch", type=int, help="the deliver group's batch (its concurrency)")
    parser.add_argument("--profile", metavar="FILE", help="py-spy samples of deliver, collapsed")
    opts = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-deliver-"))
    workdir.chmod(0o755)
    topo = topology.load(streams_yaml(workdir, opts.batch))
    concurrency = topo.groups["deliver"].batch
    port = free_port()
    fake = f"http://127.0.0.1:{port}"
    py = sys.executable
    with EmbeddedRedis(workdir / "redis") as r, EmbeddedPostgres(workdir / "pg") as pg:
        asyncio.run(Store.ensure_database(pg.url(), "bench"))
        database = pg.url("bench")

        async def schema() -> None:
            store = await Store.connect(database, max_size=1)
            await store.apply_schema((ROOT / "schema.sql").read_text())
            await store.close()

        asyncio.run(schema())
        fake_proc = subprocess.Popen(
            [py, "scripts/fake_chatwoot.py", "--port", str(port), "--token", TOKEN, "--no-echo",
             "--quiet"],
            cwd=ROOT, stdout=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            for _ in range(100):
                try:
                    httpx.get(f"{fake}/_fake/webhooks", timeout=1)
                    break
                except httpx.HTTPError:
                    time.sleep(0.1)
            cpu0 = cpu_seconds(fake_proc.pid)
            wall0 = time.perf_counter()
            fake_max = fake_ceiling(fake, workdir, opts.conversations, concurrency)
            fake_cpu_wrk = (cpu_seconds(fake_proc.pid) - cpu0) / (time.perf_counter() - wall0)
            httpx.post(f"{fake}/_fake/reset")
            cpu0 = cpu_seconds(fake_proc.pid)
            ceiling = asyncio.run(baseline(fake, opts.replies, opts.conversations, concurrency))
            fake_cpu_baseline = cpu_seconds(fake_proc.pid) - cpu0
            httpx.post(f"{fake}/_fake/reset")
            asyncio.run(fill(r.url, topo.key("outbound"), opts.replies, opts.conversations))
            env = dict(os.environ, REDIS_URL=r.url, DATABASE_URL=database, LOG_FORMAT="json",
                       SWITCHBOARD_STREAMS=str(workdir / "streams.yaml"),
                       SWITCHBOARD_HOME=str(workdir / "home"), CHATWOOT_BASE_URL=fake,
                       CHATWOOT_API_TOKEN=TOKEN)  # fmt: skip
            with (workdir / "deliver.log").open("wb") as out:
                deliver = subprocess.Popen([py, "-m", "consumers", "deliver"],
                                           env=env, cwd=ROOT, stdout=out, stderr=out)  # fmt: skip
            spy = None
            if opts.profile:
                # Collapsed stacks (--format raw): summed per function, they show the hot spots.
                spy = subprocess.Popen([str(Path(py).parent / "py-spy"), "record", "-o",
                                        opts.profile, "-p", str(deliver.pid), "--duration",
                                        "15", "--format", "raw"])  # fmt: skip
            cpu0 = cpu_seconds(fake_proc.pid)
            wall0 = time.perf_counter()
            try:
                rate = asyncio.run(drain(database, opts.replies, deliver))
                wall = time.perf_counter() - wall0
                deliver_cpu = cpu_seconds(deliver.pid)
            finally:
                deliver.terminate()
                deliver.wait(timeout=30)
            if spy is not None:
                spy.wait()
            fake_cpu = cpu_seconds(fake_proc.pid) - cpu0
            received = fake_received(fake)
        finally:
            fake_proc.terminate()
            fake_proc.wait(timeout=30)
    assert received == opts.replies, f"the fake received {received} of {opts.replies}"
    load = os.getloadavg()
    print(f"a backlog of {opts.replies} replies over {opts.conversations} conversations, "
          f"one deliver process (batch {concurrency}); load average {load[0]:.1f}")  # fmt: skip
    print(f"{'sender':<44}{'replies/s':>10}{'ratio':>8}{'fake CPU':>10}")
    print(f"{'wrk, C load generator (the fake itself)':<44}{fake_max:>10.0f}"
          f"{fake_max / ceiling:>8.2f}{fake_cpu_wrk:>9.0%}")  # fmt: skip
    print(f"{'bare httpx POST loop (ceiling)':<44}{ceiling:>10.0f}{1:>8.2f}"
          f"{fake_cpu_baseline / (opts.replies / ceiling):>9.0%}")  # fmt: skip
    print(f"{'switchboard consume deliver':<44}{rate:>10.0f}{rate / ceiling:>8.2f}"
          f"{fake_cpu / wall:>9.0%}")  # fmt: skip
    print(
        f"deliver process CPU: {deliver_cpu:.1f} s over {wall:.1f} s "
        f"({deliver_cpu / opts.replies * 1e6:.0f} µs per reply, start-up included)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
