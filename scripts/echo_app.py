#!/usr/bin/env python3
"""The smallest worker app: Switchboard POSTs it each turn, signed; it answers inline.

    python scripts/echo_app.py --port 8700 --secret whsec_...
    switchboard apps add echo http://127.0.0.1:8700/turns --secret whsec_...

It verifies the Standard Webhooks signature (401 otherwise) and answers
`{"replies": [{"content": "You said: ...", "ref": "<turn>:0"}]}`. For the tests, the demo and
the chaos run it can misbehave: fail a turn's first pushes (500), answer slowly, hang past
Switchboard's timeout, or (`--late`) hang after saving its reply and post it later through
`POST /outbound` with the same Idempotency-Key. `GET /_echo/requests` lists what it received.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from typing import Any

import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumers import signing


class Behaviour(msgspec.Struct, kw_only=True):
    fail_first: int = 0  # 500 to a turn's first N pushes
    fail_rate: float = 0.0  # else 500 with this probability
    hang_rate: float = 0.0  # or hang (past Switchboard's timeout) with this one
    slow_s: float = 0.0  # answer after this long
    slow_rate: float = 1.0  # (with this probability)
    late_s: float | None = None  # hang on the first push, POST /outbound after this long
    hang_s: float = 60.0
    outbound_url: str | None = None
    outbound_token: str | None = None


class EchoApp:
    def __init__(self, secret: str, behaviour: Behaviour, rand: random.Random) -> None:
        self.secret = secret
        self.behaviour = behaviour
        self.rand = rand
        self.seen: list[dict[str, Any]] = []
        self.attempts: dict[str, int] = {}
        self.saved: dict[str, dict[str, Any]] = {}  # turn -> the reply it will give
        self.tasks: set[asyncio.Task[None]] = set()

    async def turns(self, request: Request) -> Response:
        body = await request.body()
        verified = signing.verify([self.secret], request.headers, body, now=time.time())
        turn_id = request.headers.get("webhook-id", "")
        self.seen.append({"turn": turn_id, "verified": verified})
        if not verified:
            return JSONResponse({"error": "bad signature"}, status_code=401)
        attempt = self.attempts[turn_id] = self.attempts.get(turn_id, 0) + 1
        turn = msgspec.json.decode(body)
        b = self.behaviour
        if turn_id in self.saved:  # a retry after we hung: the reply we saved, same ref
            return JSONResponse({"replies": [self.saved[turn_id]]})
        if b.late_s is not None:
            self.saved[turn_id] = reply_to(turn)
            self._later(turn_id, b.late_s)
            await asyncio.sleep(b.hang_s)
        if attempt <= b.fail_first or self.rand.random() < b.fail_rate:
            return JSONResponse({"error": "injected failure"}, status_code=500)
        if self.rand.random() < b.hang_rate:
            self.saved[turn_id] = reply_to(turn)
            await asyncio.sleep(b.hang_s)
        if b.slow_s and self.rand.random() < b.slow_rate:
            await asyncio.sleep(b.slow_s)
        return JSONResponse({"replies": [reply_to(turn)]})

    def _later(self, turn_id: str, after_s: float) -> None:
        task = asyncio.create_task(self._post_later(turn_id, after_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _post_later(self, turn_id: str, after_s: float) -> None:
        """Answer through POST /outbound, the saved reply's ref as the Idempotency-Key."""
        await asyncio.sleep(after_s)
        b = self.behaviour
        assert b.outbound_url is not None
        reply = self.saved[turn_id]
        async with httpx.AsyncClient() as client:
            for _ in range(20):
                try:
                    answer = await client.post(
                        b.outbound_url, json={k: v for k, v in reply.items() if k != "ref"},
                        headers={"authorization": f"Bearer {b.outbound_token}",
                                 "idempotency-key": reply["ref"]},
                    )  # fmt: skip
                    if answer.status_code == 202:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)

    async def requests(self, request: Request) -> Response:
        return JSONResponse(self.seen)


def reply_to(turn: dict[str, Any]) -> dict[str, Any]:
    said = " / ".join(m.get("content") or "(attachment)" for m in turn["messages"])
    return {
        "account": turn["account"],
        "conversation": turn["conversation"],
        "turn": turn["turn"],
        "content": f"You said: {said}",
        "ref": f"{turn['turn']}:0",
    }


def create_app(secret: str, behaviour: Behaviour, *, seed: int = 0) -> Starlette:
    app = EchoApp(secret, behaviour, random.Random(seed))
    return Starlette(
        routes=[
            Route("/turns", app.turns, methods=["POST"]),
            Route("/_echo/requests", app.requests, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8700)
    parser.add_argument("--secret", default=os.environ.get("ECHO_APP_SECRET"),
                        help="the app's whsec_ secret (default: $ECHO_APP_SECRET)")  # fmt: skip
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--hang-rate", type=float, default=0.0)
    parser.add_argument("--hang", type=float, default=60.0, metavar="SECONDS")
    parser.add_argument("--slow", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--slow-rate", type=float, default=1.0)
    parser.add_argument("--late", type=float, metavar="SECONDS")
    parser.add_argument("--outbound-url")
    parser.add_argument("--outbound-token")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.secret:
        parser.error("give --secret or ECHO_APP_SECRET")
    signing.key_of(args.secret)  # a malformed secret stops us here, not at the first turn
    behaviour = Behaviour(
        fail_first=args.fail_first, fail_rate=args.fail_rate, hang_rate=args.hang_rate,
        slow_s=args.slow, slow_rate=args.slow_rate, late_s=args.late, hang_s=args.hang,
        outbound_url=args.outbound_url, outbound_token=args.outbound_token,
    )  # fmt: skip
    app = create_app(args.secret, behaviour, seed=args.seed)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
