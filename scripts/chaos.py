#!/usr/bin/env python3
"""Chaos runs: the whole pipeline, as real processes, under a steady load of customer webhooks
while something breaks; then it counts. It fails unless every webhook answered 2xx was stored,
nothing was stored or replied twice, and every customer got an answer.

    python scripts/chaos.py --scenario kill-consumers --seconds 30 --rate 20

Scenarios: none, kill-consumers (SIGKILL a consumer process every few seconds and start a new
one), restart-redis and restart-postgres (stopped mid-load, started again), chatwoot-faults
(20% of replies answered 500, 5% time out after Chatwoot saved them, bursts of 429),
ingress-down (the ingress SIGKILLed for 10 s mid-run while Chatwoot drops 20% of its webhooks
for the whole run: only the backfill, every 2 s here, can bring those messages; every customer
message must end up stored once),
postgres-failover (PostgreSQL turns read-only and drops every connection, as after a failover
to a replica, then is writable again a few seconds later),
chatwoot-list-failures (15% of replies time out after Chatwoot saved them, while the message
list the deliverer checks before sending again fails in phases: 500s and timeouts, then 401s,
then nothing; with a user token and no echo webhooks, so that only the list can prove a reply
landed; expected: nothing dead, no consumer process exits),
app-faults (the turns go to a worker app over HTTP, scripts/echo_app.py, which answers 20% of
pushes 500, hangs past the 1 s timeout on 5% after saving its reply (the retry gets it), and
answers 30% slowly (0.6 s); expected: every customer answered, no push answered twice, no
reply posted twice).
Uses embedded Redis and PostgreSQL in a temporary folder; the fake Chatwoot plays the customers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from consumers.embedded import EmbeddedPostgres, EmbeddedRedis, free_port  # noqa: E402
from consumers.store import Store  # noqa: E402
from consumers.store.apps import AppSQL  # noqa: E402

SECRET, TOKEN, USER_TOKEN, PREFIX = "chaos-secret", "chaos-bot", "chaos-user", "chaos"
SCENARIOS = ("none", "kill-consumers", "restart-redis", "restart-postgres", "chatwoot-faults",
             "ingress-down", "postgres-failover", "chatwoot-list-failures",
             "app-faults")  # fmt: skip
# app-faults: the worker app's misbehaviour (scripts/echo_app.py flags) and its secret.
APP_FAULTS = ["--fail-rate", "0.2", "--hang-rate", "0.0625", "--hang", "3",
              "--slow", "0.6", "--slow-rate", "0.3", "--seed", "5"]  # fmt: skip
APP_SECRET = "whsec_" + "Y2hhb3MtYXBwLXNlY3JldC1rZXktMzItYnl0ZXMhIQ=="
DROP_WEBHOOKS, INGRESS_DOWN_S = 0.2, 10.0
FAULTS = [
    {"path": "/messages", "method": "POST", "status": 500, "probability": 0.2},
    {"path": "/messages", "method": "POST", "delay_ms": 1500, "after": True, "probability": 0.0625},
]  # fmt: skip  (0.0625 of the 80% left: 5% of all replies)
BURST_429 = {"path": "/messages", "method": "POST", "status": 429, "retry_after": 1, "times": 15}
# Replies that land but whose answer never comes (the client gives up after timeout_ms).
AMBIGUOUS_POSTS = {"path": "/messages", "method": "POST", "delay_ms": 1500, "after": True,
                   "probability": 0.15}  # fmt: skip
LIST_PHASES = [
    ("list 500s and timeouts", [
        {"path": "/messages", "method": "GET", "status": 500, "probability": 0.5},
        {"path": "/messages", "method": "GET", "delay_ms": 1500, "probability": 0.5},
    ]),
    ("list 401s", [{"path": "/messages", "method": "GET", "status": 401,
                    "body": '{"error": "Unauthorized"}'}]),
    ("list answering", []),
]  # fmt: skip


def streams_yaml(workdir: Path, scenario: str, extra: Sequence[tuple[str, str]] = ()) -> Path:
    """The repository's topology, tuned to notice failures within seconds, not minutes (and
    by `extra` replacements, e.g. the benchmarks' raised rate limits)."""
    text = (ROOT / "streams.yaml").read_text()
    backfill = "every_s: 2" if scenario == "ingress-down" else "every_s: 300"
    if scenario == "app-faults":  # the turns go to the worker app only
        extra = [*extra, ("name: default\n    stream: turns",
                          "name: default\n    stream: turns:apps\n    app: echo")]  # fmt: skip
    for old, new in (
        ("every_s: 300", backfill),
        ("prefix: sb", f"prefix: {PREFIX}"),
        ("claim_idle_ms: 30000", "claim_idle_ms: 2000"),
        ("claim_idle_ms: 15000", "claim_idle_ms: 2000"),
        ("timeout_ms: 10000", "timeout_ms: 1000"),
        ("retry_ms: [1000, 5000, 15000, 60000, 300000]", "retry_ms: [200, 500, 1000, 2000]"),
        ("max_attempts: 8", "max_attempts: 40"),
        ("echo_wait_ms: 20000", "echo_wait_ms: 2000\n  lease_ms: 3000"),
        *extra,
    ):
        assert old in text, old
        text = text.replace(old, new)
    path = workdir / "streams.yaml"
    path.write_text(text)
    return path


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        with (logs / f"{name}.log").open("ab") as out:
            self.popen = subprocess.Popen(args, env=env, cwd=ROOT, stdout=out,
                                          stderr=subprocess.STDOUT)  # fmt: skip

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()


class Stack:
    def __init__(
        self,
        workdir: Path,
        *,
        consumers: int,
        user_token: bool,
        scenario: str = "none",
        echo: bool = True,
        streams: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.workdir = workdir
        self.streams = streams
        self.scenario = scenario
        self.redis = EmbeddedRedis(workdir / "redis")
        self.postgres = EmbeddedPostgres(workdir / "postgres")
        self.ingress_port, self.fake_port = free_port(), free_port()
        self.fake = f"http://127.0.0.1:{self.fake_port}"
        self.consumer_count = consumers
        self.user_token = user_token
        self.echo = echo
        self.consumers: list[Process] = []
        self.others: list[Process] = []
        self.ingress: Process | None = None
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()
        asyncio.run(Store.ensure_database(self.postgres.url(), "switchboard"))
        database = self.postgres.url("switchboard")
        asyncio.run(_apply_schema(database))
        self.env = dict(
            os.environ, REDIS_URL=self.redis.url, DATABASE_URL=database, LOG_FORMAT="json",
            SWITCHBOARD_STREAMS=str(streams_yaml(self.workdir, self.scenario, self.streams)),
            PORT=str(self.ingress_port),
            SWITCHBOARD_HOME=str(self.workdir / "home"), CHATWOOT_BASE_URL=self.fake,
            CHATWOOT_API_TOKEN=TOKEN, CHATWOOT_WEBHOOK_SECRETS=SECRET, CHATWOOT_BOT_ID="1",
        )  # fmt: skip
        if self.user_token:
            self.env["CHATWOOT_USER_TOKEN"] = USER_TOKEN
        py = sys.executable
        self.others.append(self.spawn("fake", [
            py, "scripts/fake_chatwoot.py", "--port", str(self.fake_port), "--token", TOKEN,
            "--user-token", USER_TOKEN, "--secret", SECRET,
            "--webhook-url", f"http://127.0.0.1:{self.ingress_port}/webhooks/chatwoot",
            *(["--drop-webhooks", str(DROP_WEBHOOKS), "--seed", "3"]
              if self.scenario == "ingress-down" else []),
            *([] if self.echo else ["--no-echo"]),
        ]))  # fmt: skip
        self.ingress = self.spawn("ingress", [py, "-m", "ingress"])
        self.others.append(self.spawn("echo-agent", [py, "scripts/echo_agent.py",
                                                     "--prefix", PREFIX]))  # fmt: skip
        if self.scenario == "app-faults":
            self.start_app()
        for _ in range(self.consumer_count):
            self.start_consumer()
        _wait_http(f"{self.fake}/_fake/requests")
        _wait_http(f"http://127.0.0.1:{self.ingress_port}/health")

    def start_app(self) -> None:
        """The echo worker app, misbehaving, registered as `echo` (1 s timeout)."""
        port = free_port()
        self.env |= {"ALLOW_HTTP_APPS": "1", "ALLOW_PRIVATE_APPS": "1"}
        asyncio.run(_add_app(self.env["DATABASE_URL"], f"http://127.0.0.1:{port}/turns"))
        args = [sys.executable, "scripts/echo_app.py", "--port", str(port), *APP_FAULTS]
        env = self.env | {"ECHO_APP_SECRET": APP_SECRET}  # for the app alone
        self.others.append(Process("echo-app", args, env, self.workdir))
        _wait_http(f"http://127.0.0.1:{port}/_echo/requests")

    def spawn(self, name: str, args: list[str]) -> Process:
        return Process(name, args, self.env, self.workdir)

    def start_consumer(self) -> None:
        n = len(self.consumers)
        self.consumers.append(self.spawn(f"consumers-{n}", [sys.executable, "-m", "consumers"]))

    def restart_ingress(self, down_s: float) -> None:
        assert self.ingress is not None
        self.ingress.stop(signal.SIGKILL)
        time.sleep(down_s)
        self.ingress = self.spawn("ingress", [sys.executable, "-m", "ingress"])
        _wait_http(f"http://127.0.0.1:{self.ingress_port}/health")

    def stop(self) -> None:
        ingress = [self.ingress] if self.ingress else []
        for process in [*self.consumers, *ingress, *self.others]:
            process.stop()
        self.postgres.stop()
        self.redis.stop()


async def _add_app(database: str, url: str) -> None:
    store = await Store.connect(database, max_size=1)
    try:
        async with store.transaction() as tx:
            await AppSQL(tx.conn).add_app("echo", url, APP_SECRET, timeout_s=1, enabled=True)
    finally:
        await store.close()


async def _apply_schema(database: str) -> None:
    store = await Store.connect(database, max_size=1)
    try:
        await store.apply_schema((ROOT / "schema.sql").read_text())
    finally:
        await store.close()


def _wait_http(url: str) -> None:
    for _ in range(200):
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not answer")


class Chaos(threading.Thread):
    """Breaks things on a schedule while the load runs."""

    def __init__(self, stack: Stack, scenario: str, seconds: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.scenario, self.seconds = stack, scenario, seconds
        self.done = threading.Event()
        self.actions: Counter[str] = Counter()

    def run(self) -> None:
        start = time.monotonic()
        pick = random.Random(7)
        if self.scenario == "chatwoot-faults":
            httpx.post(f"{self.stack.fake}/_fake/faults", json={"rules": FAULTS})
        if self.scenario == "chatwoot-list-failures":
            self._list_failures(start)
            return
        while not self.done.is_set() and time.monotonic() - start < self.seconds:
            if self.scenario == "kill-consumers":
                self.done.wait(3)
                victim = pick.choice(self.stack.consumers)
                victim.stop(signal.SIGKILL)
                self.stack.consumers.remove(victim)
                self.stack.start_consumer()
                self.actions["consumers killed (SIGKILL)"] += 1
            elif self.scenario in ("restart-redis", "restart-postgres"):
                self.done.wait(self.seconds / 3)
                server = self.stack.redis if self.scenario == "restart-redis" else (
                    self.stack.postgres)  # fmt: skip
                server.stop()
                time.sleep(3)  # down for three seconds under load
                server.start()
                self.actions[f"{server.name} restarts"] += 1
                self.done.wait(self.seconds)
            elif self.scenario == "ingress-down":
                self.done.wait(self.seconds / 3)
                self.stack.restart_ingress(INGRESS_DOWN_S)
                self.actions[f"ingress kills ({INGRESS_DOWN_S:g} s down)"] += 1
                self.done.wait(self.seconds)
            elif self.scenario == "postgres-failover":
                self.done.wait(self.seconds / 3)
                asyncio.run(_read_only(self.stack.env["DATABASE_URL"], on=True))
                time.sleep(4)  # read-only for four seconds under load
                asyncio.run(_read_only(self.stack.env["DATABASE_URL"], on=False))
                self.actions["failovers (read-only, connections cut)"] += 1
                self.done.wait(self.seconds)
            elif self.scenario == "chatwoot-faults":
                self.done.wait(4)
                httpx.post(f"{self.stack.fake}/_fake/faults",
                           json={"rules": [BURST_429, *FAULTS]})  # fmt: skip
                self.actions["429 bursts"] += 1
            else:
                self.done.wait(1)

    def _list_failures(self, start: float) -> None:
        """Ambiguous POSTs throughout; the list endpoint cycles through its phases; once the
        load ends, Chatwoot recovers, and every held reply must settle without a duplicate."""
        phase = 0
        while not self.done.is_set() and time.monotonic() - start < self.seconds:
            name, rules = LIST_PHASES[phase % len(LIST_PHASES)]
            httpx.post(f"{self.stack.fake}/_fake/faults",
                       json={"rules": [*rules, AMBIGUOUS_POSTS]})  # fmt: skip
            self.actions[f"phases: {name}"] += 1
            phase += 1
            self.done.wait(3)
        httpx.post(f"{self.stack.fake}/_fake/faults", json={"rules": []})


async def _read_only(database: str, *, on: bool) -> None:
    """What consumers see of a failover: the server read-only (25006 on every write) and
    every connection cut; or writable again. Needs a superuser (the embedded server's)."""
    conn = await asyncpg.connect(database)
    try:
        await conn.execute("SET default_transaction_read_only = off")  # this session writes
        if on:
            await conn.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        else:
            await conn.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await conn.execute("SELECT pg_reload_conf()")
        if on:
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
    finally:
        await conn.close()


def load(stack: Stack, *, seconds: float, rate: float, conversations: int) -> list[int]:
    """Customers write at `rate` messages a second; the ids Chatwoot gave their messages."""
    for n in range(1, conversations + 1):
        httpx.post(f"{stack.fake}/_fake/conversations", json={
            "conversation": n, "inbox": 1, "channel": "Channel::Api", "status": "pending",
            "contact": {"id": 1000 + n, "name": f"Customer {n}"}, "source_id": f"c{n}",
        }).raise_for_status()  # fmt: skip
    ids: list[int] = []
    pick, start = random.Random(1), time.monotonic()
    with httpx.Client(timeout=30) as client:
        while (elapsed := time.monotonic() - start) < seconds:
            n = len(ids)
            said = {"conversation": pick.randint(1, conversations), "content": f"message {n}"}
            ids.append(client.post(f"{stack.fake}/_fake/customer", json=said).json()["id"])
            time.sleep(max(0.0, (n + 1) / rate - elapsed))
    return ids


def count(stack: Stack, customer_ids: list[int]) -> dict[str, Any]:
    sent = set(customer_ids)
    webhooks = httpx.get(f"{stack.fake}/_fake/webhooks").json()
    answered = {w["id"] for w in webhooks if w["id"] in sent and w["status"] in (200, 202)}
    fake_messages = httpx.get(f"{stack.fake}/_fake/messages").json()
    refs = Counter(m["content_attributes"].get("ext_ref") for m in fake_messages
                   if m["message_type"] == 1)  # fmt: skip
    last_said: dict[int, int] = {}
    for m in fake_messages:
        if m["message_type"] == 0:
            last_said[m["conversation"]] = max(last_said.get(m["conversation"], 0), m["id"])
    rows = asyncio.run(_rows(stack.env["DATABASE_URL"]))
    stored = rows["stored"]
    unanswered = [c for c, last in last_said.items() if rows["answered"].get(c, 0) < last]
    calls = httpx.get(f"{stack.fake}/_fake/requests").json()
    answers = Counter(
        str(c.get("answered"))
        for c in calls
        if c["method"] == "POST" and c["path"].endswith("/messages")
    )
    r = redis.Redis.from_url(stack.env["REDIS_URL"])
    dead = int(r.xlen(f"{PREFIX}:dead"))
    r.close()
    lost_on_the_way = Counter(str(w["status"]) for w in webhooks
                              if w["id"] in sent and w["status"] not in (200, 202))  # fmt: skip
    pushes = (
        asyncio.run(_pushes(stack.env["DATABASE_URL"])) if stack.scenario == "app-faults" else {}
    )
    return {
        **pushes,
        "webhooks sent": len(sent),
        "answered 2xx": len(answered),
        "webhooks never received": ", ".join(
            f"{k}: {n}" for k, n in sorted(lost_on_the_way.items())
        )
        or "0",
        "messages stored": len(stored & sent),
        "customer messages not stored": len(sent - stored),
        "events applied from backfill": rows["backfilled"],
        "lost (answered 2xx, not stored)": len(answered - stored),
        "duplicates stored": rows["duplicate_rows"],
        "entries dead": dead,
        "replies delivered": sum(1 for ref in refs if ref),
        "duplicate replies": sum(n - 1 for ref, n in refs.items() if ref and n > 1),
        "replies suppressed (superseded)": rows["suppressed"],
        "replies failed": rows["failed"],
        "replies still pending": rows["pending"],
        "conversations unanswered": len(unanswered),
        "Chatwoot answers to reply POSTs": ", ".join(
            f"{k}: {n}" for k, n in sorted(answers.items())
        ),
    }


async def _rows(database: str) -> dict[str, Any]:
    store = await Store.connect(database, max_size=1)
    try:
        async with store.pool.acquire() as conn:
            ids = await conn.fetch("SELECT chatwoot_message_id FROM messages "
                                   "WHERE direction = 'inbound'")  # fmt: skip
            dup = await conn.fetchval("SELECT count(*) - count(DISTINCT (account_id, "
                                      "chatwoot_message_id)) FROM messages")  # fmt: skip
            answered = await conn.fetch("SELECT chatwoot_conversation_id AS c, answered_through "
                                        "AS a FROM conversations")  # fmt: skip
            grouped = await conn.fetch("SELECT status, count(*) AS n FROM outbound GROUP BY 1")
            backfilled = await conn.fetchval(
                "SELECT count(*) FROM webhook_events "
                "WHERE source = 'backfill' AND outcome = 'applied'"
            )
            statuses: dict[str, int] = {r["status"]: r["n"] for r in grouped}
    finally:
        await store.close()
    return {
        "stored": {r["chatwoot_message_id"] for r in ids},
        "duplicate_rows": int(dup),
        "backfilled": int(backfilled),
        "answered": {r["c"]: r["a"] for r in answered},
        "suppressed": statuses.get("suppressed", 0),
        "failed": statuses.get("failed", 0),
        "pending": statuses.get("queued", 0) + statuses.get("sending", 0),
    }


async def _pushes(database: str) -> dict[str, Any]:
    """The push figures: by status, attempts by outcome, and pushes answered twice."""
    store = await Store.connect(database, max_size=1)
    try:
        async with store.pool.acquire() as conn:
            statuses = await conn.fetch("SELECT status, count(*) AS n FROM pushes GROUP BY 1")
            outcomes = await conn.fetch(
                "SELECT outcome || ' ' || COALESCE(http_status::text, 'timeout') AS outcome, "
                "count(*) AS n FROM push_attempts GROUP BY 1 ORDER BY 1"
            )
            twice = await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM push_attempts WHERE outcome = 'answered' "
                "GROUP BY turn, app HAVING count(*) > 1) AS t"
            )
    finally:
        await store.close()
    by = {r["status"]: r["n"] for r in statuses}
    return {
        "turns pushed": sum(by.values()),
        "pushes answered": by.get("answered", 0),
        "pushes superseded (not sent)": by.get("superseded", 0),
        "pushes failed": by.get("failed", 0),
        "pushes still pending": by.get("queued", 0) + by.get("pushing", 0),
        "push attempts": ", ".join(f"{r['outcome']}: {r['n']}" for r in outcomes),
        "pushes answered twice": int(twice),
    }


def settled(figures: dict[str, Any], scenario: str) -> bool:
    # With lost webhooks, only the backfill brings every message: require all of them.
    everything = scenario != "ingress-down" or figures["customer messages not stored"] == 0
    return bool(
        everything
        and figures["messages stored"] >= figures["answered 2xx"]
        and figures["replies still pending"] == 0
        and figures["conversations unanswered"] == 0
        and figures.get("pushes still pending", 0) == 0
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenario", choices=SCENARIOS, default="none")
    parser.add_argument("--seconds", type=float, default=20, help="how long the load runs")
    parser.add_argument("--rate", type=float, default=20, help="customer messages a second")
    parser.add_argument("--conversations", type=int, default=20)
    parser.add_argument("--consumers", type=int, default=2, help="consumer processes")
    parser.add_argument("--settle", type=float, default=120, help="max seconds to settle after")
    parser.add_argument(
        "--no-user-token",
        action="store_true",
        help="prove replies by echo webhooks only (no message listing)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the folder with the logs")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="sb-chaos-"))
    workdir.chmod(0o755)
    # Without echo webhooks, only the message list can prove an ambiguous reply landed.
    echo = args.scenario != "chatwoot-list-failures"
    stack = Stack(workdir, consumers=args.consumers, user_token=not args.no_user_token,
                  scenario=args.scenario, echo=echo)  # fmt: skip
    try:
        stack.start()
        chaos = Chaos(stack, args.scenario, args.seconds)
        chaos.start()
        started = time.monotonic()
        ids = load(stack, seconds=args.seconds, rate=args.rate, conversations=args.conversations)
        achieved = len(ids) / (time.monotonic() - started)
        chaos.done.set()
        chaos.join()
        loaded = time.monotonic()
        figures = count(stack, ids)
        while not settled(figures, args.scenario) and time.monotonic() - loaded < args.settle:
            time.sleep(1)
            figures = count(stack, ids)
        figures["seconds to settle after the load"] = round(time.monotonic() - loaded, 1)
        # A consumer process must outlive every fault (the killed ones were replaced).
        figures["consumer processes exited"] = sum(
            1 for p in stack.consumers if p.popen.poll() is not None
        )
        figures.update(chaos.actions)
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    ok = (
        figures["lost (answered 2xx, not stored)"] == 0
        and figures["duplicates stored"] == 0
        and figures["duplicate replies"] == 0
        and figures["consumer processes exited"] == 0
        and (args.scenario != "postgres-failover" or figures["entries dead"] == 0)
        and settled(figures, args.scenario)
    )
    if args.scenario == "chatwoot-list-failures":
        ok = ok and figures["entries dead"] == 0
    if args.scenario == "app-faults":
        ok = ok and figures["pushes answered twice"] == 0 and figures["pushes failed"] == 0
    print(f"scenario: {args.scenario} ({args.seconds:g} s at {achieved:.1f} messages/s, "
          f"{args.conversations} conversations, {args.consumers} consumer processes, "
          f"{'echo only' if args.no_user_token else 'user token'})")  # fmt: skip
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"  {name.ljust(width)}  {value}")
    print(f"  {'elapsed'.ljust(width)}  {round(time.monotonic() - started, 1)} s")
    print(
        "RESULT: ok"
        if ok
        else "RESULT: FAILED" + (f" (logs kept in {workdir})" if args.keep else "")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
