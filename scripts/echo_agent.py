#!/usr/bin/env python3
"""The smallest Switchboard agent: reads customer turns, replies "You said: ...".

Copy it to write your own. The contract is all in Redis: read `sb:turns` with your own consumer
group, XADD your reply to `sb:outbound`, then XACK the turn. Give each reply a `ref` derived
from the turn, so a turn you see twice (after a crash) is still answered once.

    REDIS_URL=redis://127.0.0.1:6380/0 python scripts/echo_agent.py [--prefix sb]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import time
from typing import Any

import redis

GROUP = "echo-agent"


def reply_to(turn: dict[str, str]) -> dict[str, str]:
    said = " / ".join(m["content"] or "(attachment)" for m in json.loads(turn["messages"]))
    return {
        "account": turn["account"],
        "conversation": turn["conversation"],
        "content": f"You said: {said}",
        "ref": f"echo-{turn['turn']}",
        "turn": turn["turn"],
    }


def connect(url: str) -> Any:
    """`redis+cluster://host:port` (Switchboard's spelling of a Cluster) or a plain URL."""
    scheme, sep, rest = url.partition("+cluster://")
    if sep:
        return redis.RedisCluster.from_url(f"{scheme}://{rest}", decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="Answers every customer turn with an echo.")
    parser.add_argument("--prefix", default="sb", help="the key prefix of streams.yaml")
    prefix = parser.parse_args().prefix
    turns, outbound = f"{prefix}:turns", f"{prefix}:outbound"
    r = connect(os.environ["REDIS_URL"])
    try:
        r.xgroup_create(turns, GROUP, id="0", mkstream=True)
    except redis.ResponseError:
        pass  # the group exists already
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"echo-agent: reading {turns}", flush=True)
    start = "0"  # first what this consumer read but did not finish, then new turns (">")
    while running:
        try:
            batches: Any = r.xreadgroup(GROUP, consumer, {turns: start}, count=10, block=1000)
        except redis.ConnectionError:
            time.sleep(1)  # Redis restarting: what we read and did not ack is still pending
            continue
        entries = batches[0][1] if batches else []
        if start == "0" and not entries:
            start = ">"
        for entry_id, turn in entries:
            if turn:
                r.xadd(outbound, reply_to(turn))
            r.xack(turns, GROUP, entry_id)  # only once the reply is safely in the stream


if __name__ == "__main__":
    main()
