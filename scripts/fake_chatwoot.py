#!/usr/bin/env python3
"""A fake Chatwoot: a real HTTP server speaking the part of Chatwoot's API Switchboard calls.

It records every request, answers like Chatwoot (chatwoot.md §4), can post the echo webhook of
each message it creates back to the ingress (signed, escaped like Rails), can play a customer
(`POST /_fake/customer`), and injects faults on demand (`POST /_fake/faults`).

    python scripts/fake_chatwoot.py --port 3000 --token T --secret S \
        --webhook-url http://127.0.0.1:8000/webhooks/chatwoot

Control endpoints (JSON): GET /_fake/requests, GET /_fake/messages, POST /_fake/reset,
POST /_fake/faults {"rules": [{"path": "messages", "status": 500, "times": 2}, ...]},
POST /_fake/customer {"content": "...", "account": 1, "conversation": 1}.
A rule matches requests whose path contains `path` (and `method`, if given); it applies
`times` times (default: always) with `probability` (default 1): answers `status`, or, with
`delay_ms`, waits first; `after: true` applies the request's effect before failing (the
ambiguous case: Chatwoot saved it, the client never heard).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ingress.signatures import sign_chatwoot  # noqa: E402

API = "/api/v1/accounts/{account:int}/conversations/{conversation:int}"


class Rule(msgspec.Struct, kw_only=True):
    path: str = ""
    method: str | None = None
    status: int | None = None
    body: str | None = None
    delay_ms: int = 0
    times: int | None = None
    probability: float = 1.0
    after: bool = False
    retry_after: int | None = None


class Faults(msgspec.Struct):
    rules: list[Rule] = []


class Customer(msgspec.Struct, kw_only=True):
    content: str
    account: int = 1
    conversation: int = 1
    inbox: int = 1
    contact: int = 501
    name: str = "Demo Customer"


def rails_json(payload: object) -> bytes:
    """Compact JSON as Rails writes it: <, > and & escaped (inside strings, where they occur)."""
    raw = msgspec.json.encode(payload)
    return raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


class FakeChatwoot:
    def __init__(
        self,
        *,
        tokens: set[str],
        user_tokens: set[str],
        webhook_url: str | None,
        secret: str | None,
        echo: bool = True,
        seed: int = 0,
    ) -> None:
        self.tokens = tokens
        self.user_tokens = user_tokens
        self.webhook_url = webhook_url
        self.secret = secret
        self.echo = echo
        self.random = random.Random(seed)
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.statuses: dict[tuple[int, int], str] = {}
        self.rules: list[Rule] = []
        self.next_id = 1000
        self.webhooks_sent = 0
        self.tasks: set[asyncio.Task[None]] = set()

    # -- the API ---------------------------------------------------------------------------

    async def api(self, request: Request) -> Response:
        body = await request.body()
        token = request.headers.get("api_access_token", "")
        record = {
            "method": request.method,
            "path": request.url.path,
            "query": str(request.url.query),
            "json": msgspec.json.decode(body) if body else None,
            "token_ok": token in self.tokens | self.user_tokens,
            "at": time.time(),
        }
        self.requests.append(record)
        if token not in self.tokens | self.user_tokens:
            return JSONResponse({"errors": ["Invalid Access Token"]}, status_code=401)
        rule = self._rule_for(request)
        if rule is not None and not rule.after:
            return await self._fail(rule)
        response = await self._apply(request, record, token)
        if rule is not None:
            return await self._fail(rule)
        return response

    async def _apply(self, request: Request, record: dict[str, Any], token: str) -> Response:
        account = int(request.path_params["account"])
        conversation = int(request.path_params["conversation"])
        key = (account, conversation)
        path = request.url.path
        if path.endswith("/messages") and request.method == "POST":
            return JSONResponse(self._create(key, record["json"] or {}))
        if path.endswith("/messages"):
            if token not in self.user_tokens:
                return JSONResponse({"error": "bots cannot list messages"}, status_code=401)
            after = int(request.query_params.get("after") or 0)
            listed = [m for m in self.messages.get(key, []) if m["id"] > after][:100]
            return JSONResponse({"meta": {}, "payload": listed})
        if path.endswith("/toggle_status"):
            self.statuses[key] = (record["json"] or {}).get("status", "open")
            return JSONResponse(
                {
                    "payload": {
                        "success": True,
                        "current_status": self.statuses[key],
                        "conversation_id": conversation,
                    }
                }
            )
        if path.endswith("/toggle_typing_status"):
            return JSONResponse({})
        return JSONResponse({"error": "not found"}, status_code=404)

    def _create(self, key: tuple[int, int], body: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        message = {
            "id": self.next_id,
            "content": body.get("content"),
            "conversation_id": key[1],
            "inbox_id": 1,
            "message_type": 1,
            "content_type": body.get("content_type", "text"),
            "content_attributes": body.get("content_attributes") or {},
            "status": "sent",
            "created_at": int(time.time()),
            "private": bool(body.get("private", False)),
            "source_id": None,
            "sender": {"id": 1, "name": "Switchboard demo bot", "type": "agent_bot"},
        }
        self.messages.setdefault(key, []).append(message)
        print(
            f"fake-chatwoot: message {message['id']} in conversation {key[1]}: "
            f"{message['content']!r}",
            flush=True,
        )
        if self.echo and self.webhook_url:
            self._spawn(self._webhook(self._message_event(key, message, incoming=False)))
        return message

    def _rule_for(self, request: Request) -> Rule | None:
        for rule in self.rules:
            if rule.path not in request.url.path:
                continue
            if rule.method and rule.method != request.method:
                continue
            if rule.times is not None and rule.times <= 0:
                continue
            if self.random.random() >= rule.probability:
                continue
            if rule.times is not None:
                rule.times -= 1
            return rule
        return None

    async def _fail(self, rule: Rule) -> Response:
        if rule.delay_ms:
            await asyncio.sleep(rule.delay_ms / 1000)
        if rule.status is None:
            return JSONResponse({"error": "delayed"})
        headers = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else {}
        return Response(
            rule.body or '{"error": "injected"}',
            status_code=rule.status,
            headers=headers,
            media_type="application/json",
        )

    # -- webhooks --------------------------------------------------------------------------

    def _message_event(
        self,
        key: tuple[int, int],
        message: dict[str, Any],
        *,
        incoming: bool,
        contact: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        account, conversation = key
        contact = contact or {
            "id": 501,
            "name": "Demo Customer",
            "email": None,
            "phone_number": None,
            "identifier": None,
        }
        created = dt.datetime.fromtimestamp(message["created_at"], dt.UTC)
        return {
            "event": "message_created",
            "id": message["id"],
            "content": message["content"],
            "content_type": message["content_type"],
            "content_attributes": message["content_attributes"],
            "message_type": "incoming" if incoming else "outgoing",
            "private": message["private"],
            "source_id": None,
            "created_at": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "sender": contact if incoming else message["sender"],
            "inbox": {"id": 1, "name": "Demo API inbox"},
            "account": {"id": account, "name": "Demo"},
            "additional_attributes": {},
            "conversation": {
                "id": conversation,
                "inbox_id": 1,
                "channel": "Channel::Api",
                "status": self.statuses.get(key, "pending"),
                "contact_inbox": {"source_id": f"demo-{contact['id']}"},
                "meta": {"sender": contact, "assignee": None, "assignee_type": None},
                "messages": [
                    {
                        "id": message["id"],
                        "message_type": message["message_type"],
                        "status": message["status"],
                    }
                ],
                "created_at": message["created_at"],
                "updated_at": time.time(),
                "account": {"id": account, "name": "Demo"},
            },
        }

    async def _webhook(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        body = rails_json(payload)
        headers = {"content-type": "application/json", "x-chatwoot-delivery": str(uuid.uuid4())}
        if self.secret:
            stamp = str(int(time.time()))
            headers["x-chatwoot-timestamp"] = stamp
            headers["x-chatwoot-signature"] = sign_chatwoot(body, self.secret, stamp)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                response = await client.post(self.webhook_url, content=body, headers=headers)
            self.webhooks_sent += 1
            if response.status_code >= 300:
                print(f"fake-chatwoot: webhook answered {response.status_code}", flush=True)
        except httpx.HTTPError as exc:
            # Like Chatwoot: no retry, the event is lost for this receiver.
            print(f"fake-chatwoot: webhook failed: {exc!r}", flush=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # -- control ---------------------------------------------------------------------------

    async def customer(self, request: Request) -> Response:
        """Play the customer: Chatwoot stores an incoming message and sends its webhook."""
        said = msgspec.json.decode(await request.body(), type=Customer)
        key = (said.account, said.conversation)
        self.next_id += 1
        message = {
            "id": self.next_id,
            "content": said.content,
            "message_type": 0,
            "content_type": "text",
            "content_attributes": {},
            "status": "sent",
            "created_at": int(time.time()),
            "private": False,
            "sender": {"id": said.contact, "name": said.name, "type": "contact"},
        }
        self.messages.setdefault(key, []).append(message)
        contact = {
            "id": said.contact,
            "name": said.name,
            "email": None,
            "phone_number": None,
            "identifier": None,
        }
        if self.webhook_url:
            await self._webhook(self._message_event(key, message, incoming=True, contact=contact))
        return JSONResponse({"id": message["id"], "webhook": self.webhook_url is not None})

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def list_messages(self, request: Request) -> Response:
        return JSONResponse(
            [
                {"account": a, "conversation": c, **m}
                for (a, c), ms in self.messages.items()
                for m in ms
            ]
        )

    async def set_faults(self, request: Request) -> Response:
        self.rules = msgspec.json.decode(await request.body(), type=Faults).rules
        return JSONResponse({"rules": len(self.rules)})

    async def reset_all(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(API + "/messages", self.api, methods=["GET", "POST"]),
                Route(API + "/toggle_status", self.api, methods=["POST"]),
                Route(API + "/toggle_typing_status", self.api, methods=["POST"]),
                Route("/_fake/customer", self.customer, methods=["POST"]),
                Route("/_fake/requests", self.list_requests, methods=["GET"]),
                Route("/_fake/messages", self.list_messages, methods=["GET"]),
                Route("/_fake/faults", self.set_faults, methods=["POST"]),
                Route("/_fake/reset", self.reset_all, methods=["POST"]),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--token", action="append", default=[], help="accepted bot token")
    parser.add_argument(
        "--user-token", action="append", default=[], help="accepted user token (may list messages)"
    )
    parser.add_argument("--webhook-url", help="where to post webhooks (the ingress)")
    parser.add_argument("--secret", help="webhook signing secret")
    parser.add_argument(
        "--no-echo",
        action="store_true",
        help="do not post the webhook of messages created through the API",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    args = parser.parse_args()
    fake = FakeChatwoot(
        tokens=set(args.token) or {"demo-bot-token"},
        user_tokens=set(args.user_token),
        webhook_url=args.webhook_url,
        secret=args.secret,
        echo=not args.no_echo,
        seed=args.seed,
    )
    uvicorn.run(fake.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
