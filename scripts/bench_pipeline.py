#!/usr/bin/env python3
"""The whole pipeline at fixed rates: reply latency, the highest rate it keeps up with, and the
memory of every process while a backlog drains.

Real processes (chaos.py's Stack): the fake Chatwoot signs and sends each customer message as a
webhook to the ingress; persist, turns and deliver (one `consumers` process), the echo agent;
the reply is posted back to the fake. Latency is customer message created at the fake → reply
created at the fake, both on the fake's clock; and, to leave out the fake's own webhook delay
(one Python process, a new HTTP client per webhook), from the entry's arrival in sb:events
(its stream id's time) to the reply at the fake: the machine's one clock. Each rate also
prints the CPU share of each process, to show which one is the bottleneck. Debounce 0; the
host rate limit raised (Chatwoot's real one would cap replies at 40/s); the per-conversation
limit as shipped (the load is spread over enough conversations to stay below it).

    python scripts/bench_pipeline.py                        # the figures (1M-entry backlog)
    python scripts/bench_pipeline.py --seconds 10 --backlog 20000 --ramp 50,100,200,400
    python scripts/bench_pipeline.py --backlog-only         # the 1M-entry memory run alone

Prints figures, asserts nothing: targets are p50 <= 30 ms and p99 <= 100 ms at 20 msg/s,
p99 <= 250 ms at 200 msg/s, RSS <= 150 MB per process. Other processes on the machine skew them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import chaos  # noqa: E402

sys.path.insert(0, str(ROOT))
from ingress import events  # noqa: E402

RAISED = (("host_limit: {per_minute: 2400}", "host_limit: {per_minute: 6000000}"),)
BACKLOG_FIXTURE = ROOT / "tests/fixtures/chatwoot/message_created__outgoing_agent_user.json"


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def send(
    fake: str, *, rate: float, seconds: float, conversations: int, start: int
) -> tuple[int, int]:
    """Open loop: message n is sent at n / rate whatever the answers; how many were sent, and
    how many of those the fake failed to take (it is a single Python process)."""
    total, failed = int(rate * seconds), 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=16)) as client:
        began = time.monotonic()

        async def one(n: int) -> None:
            nonlocal failed
            said = {"conversation": 1 + (start + n) % conversations, "content": f"m{start + n}"}
            try:
                (await client.post(f"{fake}/_fake/customer", json=said)).raise_for_status()
            except httpx.HTTPError:
                failed += 1

        tasks = []
        for n in range(total):
            await asyncio.sleep(max(0.0, began + n / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return total, failed


def latencies(stack: chaos.Stack, since: float) -> tuple[list[float], list[float], int]:
    """Per customer message created after `since`: seconds until the first reply that covers
    it (its turn runs through it), from its creation at the fake and from its arrival in
    sb:events (the stream id's time: the fake's own webhook delay left out); and how many have
    no reply yet."""
    messages = httpx.get(f"{stack.fake}/_fake/messages", timeout=60).json()
    arrived = asyncio.run(_arrivals(stack.env["DATABASE_URL"]))
    replies: dict[int, list[tuple[int, float]]] = {}
    for m in messages:
        ref = (m.get("content_attributes") or {}).get("ext_ref") or ""
        if m["message_type"] == 1 and ref.startswith("echo-"):
            through = int(ref.rsplit(":", 1)[1])
            replies.setdefault(m["conversation"], []).append((through, m["created_at"]))
    found, inside, missing = [], [], 0
    for m in messages:
        if m["message_type"] != 0 or m["created_at"] < since:
            continue
        covering = [at for through, at in replies.get(m["conversation"], []) if through >= m["id"]]
        if not covering:
            missing += 1
            continue
        found.append(min(covering) - m["created_at"])
        if m["id"] in arrived:
            inside.append(min(covering) - arrived[m["id"]])
    return found, inside, missing


async def _arrivals(database: str) -> dict[int, float]:
    conn = await asyncpg.connect(database)
    try:
        rows = await conn.fetch(
            "SELECT (convert_from(body, 'UTF8')::json->>'id')::bigint AS id,"
            " split_part(stream_id, '-', 1)::bigint AS ms FROM webhook_events"
            " WHERE event = 'message_created' AND source = 'chatwoot'"
        )
    finally:
        await conn.close()
    return {r["id"]: r["ms"] / 1000 for r in rows}


def pids(stack: chaos.Stack) -> dict[str, int]:
    found = {p.name: p.popen.pid for p in [*stack.consumers, *stack.others]}
    if stack.ingress is not None:
        found["ingress"] = stack.ingress.popen.pid
    return found


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def step(stack: chaos.Stack, rate: float, seconds: float, conversations: int, start: int,
         settle: float) -> dict[str, Any]:  # fmt: skip
    since = time.time()
    began = time.monotonic()
    cpu_before = {name: cpu_s(pid) for name, pid in pids(stack).items()}
    sent, failed = asyncio.run(
        send(stack.fake, rate=rate, seconds=seconds, conversations=conversations, start=start)
    )
    achieved = sent / (time.monotonic() - began)
    ended = time.monotonic()
    cpu = {name: (cpu_s(pid) - cpu_before[name]) / (ended - began)
           for name, pid in pids(stack).items()}  # fmt: skip
    found, inside, missing = latencies(stack, since)
    while missing and time.monotonic() - ended < settle:
        time.sleep(0.5)
        found, inside, missing = latencies(stack, since)
    return {"rate": rate, "achieved": achieved, "sent": sent, "failed": failed,
            "answered": len(found),
            "missing": missing, "p50": percentile(found, 0.5), "p99": percentile(found, 0.99),
            "in50": percentile(inside, 0.5), "in99": percentile(inside, 0.99),
            "settled_s": time.monotonic() - ended, "cpu": cpu}  # fmt: skip


def report(row: dict[str, Any]) -> str:
    return (f"{row['rate']:>6.0f}/s (sent {row['achieved']:.0f}/s)  p50 {row['p50'] * 1000:7.1f}"
            f" ms  p99 {row['p99'] * 1000:7.1f} ms  (from sb:events: p50 {row['in50'] * 1000:.1f}"
            f" ms, p99 {row['in99'] * 1000:.1f} ms)  answered {row['answered']}/{row['sent']}"
            f"  ({row['settled_s']:.1f} s after the load)"
            + (f"  {row['failed']} not taken by the fake" if row["failed"] else "")
            + "\n          CPU: " + ", ".join(f"{name} {share:.0%}"
                                        for name, share in row["cpu"].items()))  # fmt: skip


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def backlog(stack: chaos.Stack, entries: int, timeout: float, every: float = 60) -> dict[str, Any]:
    """Fill sb:events with `entries` webhooks at once (agents' messages: stored, no turns),
    then sample each process's RSS and Redis' memory every second while persist drains it."""
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    key = f"{chaos.PREFIX}:events"
    metrics = f"{chaos.PREFIX}:metrics"
    handled_before = int(r.hget(metrics, "persist.handled") or 0)
    base = json.loads(BACKLOG_FIXTURE.read_text())
    for chunk in range(0, entries, 5000):
        pipe = r.pipeline(transaction=False)
        for n in range(chunk, min(entries, chunk + 5000)):
            base["id"], base["content"] = 50_000_000 + n, f"backlog {n}"
            base["conversation"]["id"] = 900_000 + n % 1000
            body = json.dumps(base, separators=(",", ":")).encode()
            entry = events.EventEntry(
                event="message_created", account=1, received_at=1,
                conversation=900_000 + n % 1000, signed=True, body=body,
            )  # fmt: skip
            pipe.xadd(key, events.encode(entry))  # type: ignore[arg-type]
        pipe.execute()
    print(f"{entries} entries in {key}; draining:", flush=True)
    processes = pids(stack)
    peak = dict.fromkeys(processes, 0.0)
    redis_peak = 0
    began = time.monotonic()
    left = entries
    shown = began
    while time.monotonic() - began < timeout:
        rss = {name: rss_mb(pid) for name, pid in processes.items()}
        for name, mb in rss.items():
            peak[name] = max(peak[name], mb)
        used = int(r.info("memory")["used_memory"])
        redis_peak = max(redis_peak, used)
        # What persist acknowledged (its `handled` count), not XINFO's `lag`: Redis 6.2 (the
        # embedded server) has none, and `pending` alone is 0 between two batches.
        handled = int(r.hget(metrics, "persist.handled") or 0) - handled_before
        left = max(0, entries - handled)
        if left == 0:
            break
        if time.monotonic() - shown >= every:
            # The RSS as it goes, not only its peak: memory that grows with what was drained
            # shows here.
            shown = time.monotonic()
            print(f"  {shown - began:5.0f} s  {left:>8} left  RSS "
                  + ", ".join(f"{name} {mb:.0f}" for name, mb in rss.items())
                  + f" MB  Redis {used / 2**20:.0f} MB", flush=True)  # fmt: skip
        time.sleep(1)
    elapsed = time.monotonic() - began
    r.close()
    return {"entries": entries, "left": left, "seconds": elapsed,
            "rate": (entries - left) / elapsed, "rss_mb": peak,
            "redis_mb": redis_peak / 2**20}  # fmt: skip


def latency_and_rates(stack: chaos.Stack, args: argparse.Namespace, sent: int) -> int:
    """Reply latency at 20 and 200 msg/s, then the highest rate sustained; messages sent."""
    print(f"reply latency, customer message -> reply at the fake ({args.seconds:g} s each,"
          f" {args.conversations} conversations, 1 consumer process, debounce 0)")  # fmt: skip
    for rate in (20, 200):
        row = step(stack, rate, args.seconds, args.conversations, sent, settle=30)
        sent += row["sent"]
        print("  " + report(row))
    print("highest rate sustained (all answered within 5 s of the load's end, p99 < 1 s):")
    best = 0.0
    for tried in [float(x) for x in args.ramp.split(",")]:
        row = step(stack, tried, min(args.seconds, 10), args.conversations, sent, settle=5)
        sent += row["sent"]
        ok = (row["missing"] == 0 and row["failed"] == 0 and row["p99"] < 1.0
              and row["achieved"] >= 0.95 * tried)  # fmt: skip
        print("  " + report(row) + ("" if ok else "  <- not sustained"))
        if not ok:
            break
        best = tried
    print(f"  highest sustained: {best:.0f} msg/s")
    return sent


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30, help="length of each fixed rate")
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--ramp", default="50,100,200,400,800,1600",
                        help="rates tried for the highest sustained one")  # fmt: skip
    parser.add_argument("--backlog", type=int, default=1_000_000, help="entries (0: skip)")
    parser.add_argument("--backlog-only", action="store_true",
                        help="skip latency and rates: the backlog's memory alone")  # fmt: skip
    parser.add_argument("--drain-timeout", type=float, default=3600)
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sb-bench-pipeline-"))
    workdir.chmod(0o755)
    stack = chaos.Stack(workdir, consumers=1, user_token=True, streams=RAISED)
    try:
        stack.start()
        for n in range(1, args.conversations + 1):
            httpx.post(f"{stack.fake}/_fake/conversations", json={
                "conversation": n, "inbox": 1, "channel": "Channel::Api", "status": "pending",
                "contact": {"id": 1000 + n, "name": f"Customer {n}"}, "source_id": f"c{n}",
            }).raise_for_status()  # fmt: skip
        sent = 0
        # A few seconds at a low rate first: connections opened, code paths warm.
        step(stack, 10, 3, args.conversations, sent, settle=10)
        if not args.backlog_only:
            sent = latency_and_rates(stack, args, sent + 30)
        if args.backlog:
            drained = backlog(stack, args.backlog, args.drain_timeout)
            print(f"a backlog of {drained['entries']} webhooks in sb:events: drained at"
                  f" {drained['rate']:.0f}/s in {drained['seconds']:.0f} s"
                  f" ({drained['left']} left); peaks while it drained:")  # fmt: skip
            for name, mb in drained["rss_mb"].items():
                print(f"  RSS {name:<14} {mb:7.1f} MB")
            print(f"  Redis used_memory   {drained['redis_mb']:7.1f} MB")
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
