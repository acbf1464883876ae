"""A fake of the Meta side of Instagram comments, as a real HTTP server, and a webhook sender.

Serve (`python scripts/fake_meta.py serve --port 3100 --token T`):
- the Graph API owner lookup: GET /<version>/<media id>?fields=owner, with the token as
  `Authorization: Bearer T` or `access_token=T` → {"owner": {"id": ...}, "id": ...}; an unknown
  media → 400 code 100, a wrong token → 400 code 190 (Graph's error shape, meta.md);
- worker apps to forward to: POST /apps/<name> records the request and answers 200 (its
  Standard Webhooks headers are kept, so a test can verify them);
- steering: POST /_fake/media {"media": {"<media id>": "<owner id>"}} (added to the table),
  POST /_fake/faults {"rules": [{"path": "/v21.0/", "status": 500, "times": 1}, ...]} (as
  fake_chatwoot's: `path` contained in the request path, `method`, `times`, `probability`,
  `delay_ms`, `retry_after`; and `code`, the Graph error code in the answer), GET
  /_fake/requests (every request: method, path, fields, whether the token was right, and for
  apps the body and headers), POST /_fake/reset.

Send (`python scripts/fake_meta.py send --url http://127.0.0.1:8000/webhooks/meta --secret S
--media M [--comment C] [--times 2]`): posts a comment webhook as Meta does (non-ASCII as
\\uXXXX, `/` as `\\/`, signed X-Hub-Signature-256), and prints each answer's status.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import random
import sys
import time
from typing import Any

import httpx
import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


class Rule(msgspec.Struct, kw_only=True):
    path: str = ""
    method: str | None = None
    status: int | None = None
    code: int | None = None
    delay_ms: int = 0
    times: int | None = None
    probability: float = 1.0
    retry_after: int | None = None


class Faults(msgspec.Struct):
    rules: list[Rule] = []


class Media(msgspec.Struct):
    media: dict[str, str]


class FakeMeta:
    def __init__(self, *, tokens: set[str], seed: int = 0) -> None:
        self.tokens = tokens
        self.random = random.Random(seed)
        self.owners: dict[str, str] = {}
        self.rules: list[Rule] = []
        self.requests: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.owners.clear()
        self.rules.clear()
        self.requests.clear()

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

    async def _fail(self, rule: Rule) -> Response | None:
        if rule.delay_ms:
            await asyncio.sleep(rule.delay_ms / 1000)
        if rule.status is None:
            return None  # a delay only: answer as usual
        headers = {"retry-after": str(rule.retry_after)} if rule.retry_after is not None else {}
        code = rule.code if rule.code is not None else 2
        return _graph_error(rule.status, code, "injected", headers)

    def _token(self, request: Request) -> str:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() in ("bearer", "oauth"):
            return value.strip()
        return request.query_params.get("access_token", "")

    async def graph(self, request: Request) -> Response:
        media = request.path_params["media"]
        authorized = self._token(request) in self.tokens
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "fields": request.query_params.get("fields"),
                "authorized": authorized,
                "at": time.time(),
            }
        )
        rule = self._rule_for(request)
        if rule is not None and (failed := await self._fail(rule)) is not None:
            return failed
        if not authorized:
            return _graph_error(400, 190, "Error validating access token", {})
        owner = self.owners.get(media)
        if owner is None:
            message = f"Unsupported get request. Object with ID '{media}' does not exist"
            return _graph_error(400, 100, message, {})
        return JSONResponse({"owner": {"id": owner}, "id": media})

    async def app(self, request: Request) -> Response:
        body = await request.body()
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "app": request.path_params["name"],
                "headers": {
                    k: v
                    for k, v in request.headers.items()
                    if k.startswith("webhook-") or k == "x-hub-signature-256"
                },
                "body": body.decode("utf-8", "replace"),
                "at": time.time(),
            }
        )
        rule = self._rule_for(request)
        if rule is not None and (failed := await self._fail(rule)) is not None:
            return failed
        return JSONResponse({"ok": True})

    async def set_media(self, request: Request) -> Response:
        self.owners.update(msgspec.json.decode(await request.body(), type=Media).media)
        return JSONResponse({"media": len(self.owners)})

    async def set_faults(self, request: Request) -> Response:
        self.rules = msgspec.json.decode(await request.body(), type=Faults).rules
        return JSONResponse({"rules": len(self.rules)})

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def reset_all(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/_fake/media", self.set_media, methods=["POST"]),
                Route("/_fake/faults", self.set_faults, methods=["POST"]),
                Route("/_fake/requests", self.list_requests, methods=["GET"]),
                Route("/_fake/reset", self.reset_all, methods=["POST"]),
                Route("/apps/{name}", self.app, methods=["POST"]),
                Route("/{version}/{media}", self.graph, methods=["GET"]),
            ]
        )


def _graph_error(status: int, code: int, message: str, headers: dict[str, str]) -> Response:
    body = {
        "error": {
            "message": message,
            "type": "OAuthException",
            "code": code,
            "fbtrace_id": "AbCdEfGh",
        }
    }
    return JSONResponse(body, status_code=status, headers=headers)


def comment_webhook(media: str, comment: str, *, owner: str = "17841400000000001") -> bytes:
    """A comment webhook body as Meta sends it: ASCII-escaped, `/` escaped."""
    data = {
        "object": "instagram",
        "entry": [
            {
                "id": owner,
                "time": int(time.time()),
                "changes": [
                    {
                        "field": "comments",
                        "value": {
                            "from": {"id": "232323", "username": "caf\u00e9_fan"},
                            "media": {"id": media, "media_product_type": "FEED"},
                            "id": comment,
                            "text": "How much? \u2764 https://shop.example/item",
                        },
                    }
                ],
            }
        ],
    }
    return json.dumps(data, ensure_ascii=True).replace("/", "\\/").encode()


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def send(url: str, secret: str, media: str, comment: str, times: int) -> list[int]:
    """POST the same signed comment webhook `times` times (Meta's retries); the statuses."""
    body = comment_webhook(media, comment)
    headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, secret)}
    return [httpx.post(url, content=body, headers=headers).status_code for _ in range(times)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the fake Graph API and app sink")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3100)
    serve.add_argument("--token", action="append", default=[], help="accepted access token")
    serve.add_argument("--media", default="", help='initial owners, JSON: {"<media>": "<owner>"}')
    serve.add_argument("--faults", default="", help='initial fault rules, JSON: {"rules": [...]}')
    serve.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    sender = sub.add_parser("send", help="post a signed comment webhook to the ingress")
    sender.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8000/webhooks/meta")
    sender.add_argument("--secret", required=True, help="META_APP_SECRET of the ingress")
    sender.add_argument("--media", required=True)
    sender.add_argument("--comment", default=str(18_000_000_000_000_000 + int(time.time())))
    sender.add_argument("--times", type=int, default=1, help="send it this many times")
    args = parser.parse_args()
    if args.command == "send":
        statuses = send(args.url, args.secret, args.media, args.comment, args.times)
        sys.stdout.write(" ".join(str(s) for s in statuses) + "\n")
        return
    fake = FakeMeta(tokens=set(args.token) or {"demo-graph-token"}, seed=args.seed)
    if args.media:
        fake.owners.update(msgspec.json.decode(args.media, type=dict[str, str]))
    if args.faults:
        fake.rules = msgspec.json.decode(args.faults, type=Faults).rules
    uvicorn.run(fake.asgi(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
