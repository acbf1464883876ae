#!/usr/bin/env python3
"""A fake Chatwoot: a real HTTP server speaking the part of Chatwoot's API Switchboard calls.

It keeps conversations (inbox, channel, contact, status, assignee) and messages, answers like
Chatwoot (chatwoot.md §4), records every request, sends webhooks like Chatwoot (signed, compact
JSON escaped like Rails, never retried) to --webhook-url, and injects faults on demand.

    python scripts/fake_chatwoot.py --port 3000 --token T --secret S \\
        --webhook-url http://127.0.0.1:8000/webhooks/chatwoot

Play the people around the bot (JSON bodies; `account` defaults to 1):
  POST /_fake/conversations {"conversation": 7, "inbox": 12, "channel": "Channel::Whatsapp",
                             "status": "pending", "contact": {"id": 5, "phone_number": "+1..."}}
  POST /_fake/customer {"conversation": 7, "content": "hi"}     a customer message
  POST /_fake/agent    {"conversation": 7, "content": "hello"}  a human agent's reply
  POST /_fake/assign   {"conversation": 7, "assignee_type": "AgentBot"}   (or "User", null)
  POST /_fake/status   {"conversation": 7, "status": "resolved"}
  POST /_fake/inboxes  {"inbox": 12, "lock_to_single_conversation": true, "active_bot": false}

Stock lifecycle (chatwoot.md §4b), per inbox: a customer message on a `resolved` conversation
reopens it (`pending` when the inbox has an active bot, else `open`, the assignee kept) when
the inbox's `lock_to_single_conversation` is on; off (Chatwoot's default) it starts a new
conversation (`conversation_created`) and the old one stays resolved. `snoozed` becomes `open`.
Defaults for every inbox: Chatwoot's (lock off) with an active bot (the bot Switchboard is);
change them with --lock-to-single-conversation / --no-active-bot or POST /_fake/inboxes.
A status change is sent as Chatwoot sends it: `conversation_status_changed` (changed_attributes
null) and `conversation_updated` (changed_attributes with previous and current values).
Inspect and steer: GET /_fake/requests, GET /_fake/messages, GET /_fake/webhooks, POST /_fake/reset,
POST /_fake/faults {"rules": [{"path": "messages", "status": 500, "times": 2}, ...]}.
A rule matches requests whose path contains `path` (and `method`, if given), `times` times
(default: always) with `probability` (default 1): it answers `status` (with `retry_after`),
or, with `delay_ms`, waits first; `after: true` applies the request's effect before failing
(the ambiguous case: Chatwoot saved it, the client never heard).

Lost webhooks (Chatwoot never retries one): `--drop-webhooks P` drops each webhook with
probability P (seeded by --seed), and POST /_fake/drop {"probability": P, "events": [...],
"times": N} sets the rule at run time; each dropped webhook is listed in GET /_fake/webhooks
with status "dropped", so a test can count them. The lists a user token may read (bots get
401, as in Chatwoot): GET /api/v1/accounts/{id}/conversations?status=all&page=N (25 a page, by
last activity, newest first) and GET .../conversations/{id}/messages?after=ID (100 a page,
ascending; without `after`, the latest 20).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import re
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
# The create-message call, the one a load of replies makes: served without Starlette.
CREATE_PATH = re.compile(r"/api/v1/accounts/(\d+)/conversations/(\d+)/messages")
JSON_HEADERS = [(b"content-type", b"application/json")]
HUMAN = {"id": 7, "name": "Priya Nair", "email": "priya@acme.test", "type": "user"}
BOT = {"id": 1, "name": "Switchboard demo bot", "type": "agent_bot"}


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


class Drop(msgspec.Struct, kw_only=True):
    """Webhooks lost on the way: each one (of `events`, default all) with `probability`."""

    probability: float = 0.0
    events: list[str] | None = None
    times: int | None = None


class Inbox(msgspec.Struct, kw_only=True):
    """The inbox settings that decide where a customer's next message lands (§4b)."""

    inbox: int = 1
    lock_to_single_conversation: bool = False  # Chatwoot's default
    active_bot: bool = True


class Conversation(msgspec.Struct, kw_only=True):
    account: int = 1
    conversation: int = 1
    inbox: int = 1
    channel: str = "Channel::Api"
    status: str = "pending"
    assignee_type: str | None = None
    contact: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"id": 501, "name": "Demo Customer"}
    )
    source_id: str | None = None
    updated_at: float = 0.0
    created_at: float = 0.0
    last_activity_at: float = 0.0


class Said(msgspec.Struct, kw_only=True):
    account: int = 1
    conversation: int = 1
    content: str = ""
    private: bool = False
    assignee_type: str | None = None
    status: str = "open"


def rails_json(payload: object) -> bytes:
    """Compact JSON as Rails writes it: <, > and & escaped (inside strings, where they occur)."""
    raw = msgspec.json.encode(payload)
    return raw.replace(b"<", b"\\u003c").replace(b">", b"\\u003e").replace(b"&", b"\\u0026")


def iso(epoch: float) -> str:
    moment = dt.datetime.fromtimestamp(epoch, dt.UTC).isoformat(timespec="milliseconds")
    return moment.replace("+00:00", "Z")


class FakeChatwoot:
    def __init__(
        self,
        *,
        tokens: set[str],
        user_tokens: set[str],
        webhook_url: str | None,
        secret: str | None,
        echo: bool = True,
        quiet: bool = False,
        seed: int = 0,
        drop: Drop | None = None,
        inbox_defaults: Inbox | None = None,
    ) -> None:
        self.tokens = tokens
        self.user_tokens = user_tokens
        self.any_token = frozenset(tokens | user_tokens)  # once, not per request
        self.quiet = quiet  # no line per created message (a benchmark's load)
        self.webhook_url = webhook_url
        self.secret = secret
        self.echo = echo
        self.random = random.Random(seed)
        # Its own dice, so that dropping webhooks does not change which requests fail.
        self.drop_random = random.Random(seed + 1)
        self.initial_drop = drop or Drop()
        self.inbox_defaults = inbox_defaults or Inbox()
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.messages: dict[tuple[int, int], list[dict[str, Any]]] = {}
        self.conversations: dict[tuple[int, int], Conversation] = {}
        self.rules: list[Rule] = []
        self.next_id = 1000
        self.webhooks: list[dict[str, Any]] = []  # what the receiver answered, per webhook
        self.drop = msgspec.structs.replace(self.initial_drop)
        self.inboxes: dict[int, Inbox] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self._webhook_client: httpx.AsyncClient | None = None

    def conversation(self, account: int, conversation: int) -> Conversation:
        key = (account, conversation)
        if key not in self.conversations:
            now = time.time()
            self.conversations[key] = Conversation(
                account=account, conversation=conversation, created_at=now, last_activity_at=now
            )
        return self.conversations[key]

    def inbox(self, number: int) -> Inbox:
        return self.inboxes.get(number) or msgspec.structs.replace(
            self.inbox_defaults, inbox=number
        )

    def touch(self, conv: Conversation, **changes: Any) -> None:
        """Change a conversation; like Chatwoot, `updated_at` grows with every change."""
        for name, value in changes.items():
            setattr(conv, name, value)
        conv.updated_at = max(time.time(), conv.updated_at + 0.001)

    # -- the API ---------------------------------------------------------------------------

    async def api(self, request: Request) -> Response:
        body = await request.body()
        token = request.headers.get("api_access_token", "")
        record: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "query": str(request.url.query),
            "json": msgspec.json.decode(body) if body else None,
            "token_ok": token in self.any_token,
            "at": time.time(),
        }
        self.requests.append(record)
        if token not in self.any_token:
            return JSONResponse({"errors": ["Invalid Access Token"]}, status_code=401)
        rule = self._rule_for(request)
        if rule is not None and not rule.after:
            response = await self._fail(rule)
        else:
            response = self._apply(request, record["json"] or {}, token)
            if rule is not None:
                response = await self._fail(rule)
        record["answered"] = response.status_code if rule is None or rule.status else "timeout"
        return response

    async def start(self, request: Request) -> Response:
        """Create a conversation (an agent starting one), answering its display id. Fault
        rules apply (`after: true`: created, then the answer fails or is late)."""
        body = await request.body()
        data = msgspec.json.decode(body) if body else {}
        self.requests.append({"method": "POST", "path": request.url.path, "query": "",
                              "json": data, "at": time.time(),
                              "token_ok": request.headers.get("api_access_token", "")
                              in self.any_token})  # fmt: skip
        rule = self._rule_for(request)
        if rule is not None and not rule.after:
            return await self._fail(rule)
        number = max((c for _, c in self.conversations), default=5000) + 1
        account = int(request.path_params["account"])
        conv = self.conversation(account, number)
        conv.created_at = time.time()
        self.touch(conv, inbox=int(data.get("inbox_id", 1)), source_id=data.get("source_id"),
                   contact={"id": data.get("contact_id") or 501, "name": "Contact"})  # fmt: skip
        if rule is not None:
            return await self._fail(rule)
        return JSONResponse({"id": number, "account_id": account, "inbox_id": conv.inbox})

    async def profile(self, request: Request) -> Response:
        """GET /api/v1/profile as Chatwoot answers it: a user's token gets its profile, an
        agent bot's token 401 "not authorized for bots" (it is valid, the endpoint is not
        for bots), an unknown token 401 "Invalid Access Token"."""
        token = request.headers.get("api_access_token", "")
        self.requests.append({"method": "GET", "path": request.url.path, "query": "",
                              "json": None, "at": time.time(),
                              "token_ok": token in self.tokens | self.user_tokens})  # fmt: skip
        if token in self.user_tokens:
            return JSONResponse({"id": 1, "name": "Fake Agent", "email": "agent@example.com",
                                 "role": "administrator"})  # fmt: skip
        if token in self.tokens:
            return JSONResponse(
                {"error": "Access to this endpoint is not authorized for bots"}, status_code=401
            )
        return JSONResponse({"error": "Invalid Access Token"}, status_code=401)

    async def contact_conversations(self, request: Request) -> Response:
        """A contact's conversations (user tokens only), as Chatwoot lists them."""
        token = request.headers.get("api_access_token", "")
        self.requests.append({"method": "GET", "path": request.url.path, "query": "",
                              "json": None, "at": time.time(),
                              "token_ok": token in self.user_tokens})  # fmt: skip
        if token not in self.user_tokens:
            return JSONResponse({"error": "bots cannot list conversations"}, status_code=401)
        rule = self._rule_for(request)
        if rule is not None:
            return await self._fail(rule)
        account, contact = int(request.path_params["account"]), int(request.path_params["contact"])
        listed = [
            {"id": c.conversation, "inbox_id": c.inbox, "status": c.status,
             "created_at": int(c.created_at), "timestamp": int(c.updated_at)}
            for (a, _), c in sorted(self.conversations.items())
            if a == account and c.contact.get("id") == contact
        ]  # fmt: skip
        return JSONResponse({"payload": listed})

    def _apply(self, request: Request, body: dict[str, Any], token: str) -> Response:
        if "conversation" not in request.path_params:
            return self._list_conversations(request, token)
        conv = self.conversation(
            int(request.path_params["account"]), int(request.path_params["conversation"])
        )
        path = request.url.path
        if path.endswith("/messages") and request.method == "POST":
            sender = BOT if token in self.tokens else HUMAN
            message = self._create(conv, body, sender=sender)
            return JSONResponse(message)
        if path.endswith("/messages"):
            return self._list_messages(request, conv, token)
        if path.endswith("/toggle_status"):
            self._set_status(conv, body.get("status", "open"))
            return JSONResponse(
                {
                    "payload": {
                        "success": True,
                        "current_status": conv.status,
                        "conversation_id": conv.conversation,
                    }
                }
            )
        return JSONResponse({})  # toggle_typing_status

    def _list_conversations(self, request: Request, token: str) -> Response:
        """Chatwoot's conversation list: 25 a page, by last activity, newest first."""
        if token not in self.user_tokens:
            return JSONResponse({"error": "bots cannot list conversations"}, status_code=401)
        account = int(request.path_params["account"])
        status = request.query_params.get("status") or "open"
        page = max(1, int(request.query_params.get("page") or 1))
        mine = [c for (a, _), c in self.conversations.items() if a == account]
        chosen = [c for c in mine if status == "all" or c.status == status]
        # Chatwoot sorts on the full-precision time; it renders whole seconds.
        chosen.sort(key=lambda c: (c.last_activity_at, c.conversation), reverse=True)
        listed = [self._listed(c) for c in chosen[(page - 1) * 25 : page * 25]]
        meta = {
            "mine_count": sum(1 for c in chosen if c.assignee_type == "User"),
            "assigned_count": sum(1 for c in chosen if c.assignee_type == "User"),
            "unassigned_count": sum(1 for c in chosen if c.assignee_type != "User"),
            "all_count": len(chosen),
        }
        return JSONResponse({"data": {"meta": meta, "payload": listed}})

    def _listed(self, conv: Conversation) -> dict[str, Any]:
        """A conversation as the list renders it (conversations/partials/_conversation.json):
        the contact and channel in `meta`, a human assignee only, no `contact_inbox`."""
        key = (conv.account, conv.conversation)
        stored = self.messages.get(key, [])
        last = [self._api_message(conv, m) for m in stored[-1:]]
        spoken = [m for m in stored if m["message_type"] != 2]
        contact = {"email": None, "phone_number": None, "identifier": None, "thumbnail": "",
                   "additional_attributes": {}, "custom_attributes": {}, **conv.contact,
                   "type": "contact"}  # fmt: skip
        meta: dict[str, Any] = {"sender": contact, "channel": conv.channel, "hmac_verified": False}
        if conv.assignee_type == "User":
            meta["assignee"] = {**HUMAN, "available_name": HUMAN["name"],
                                "availability_status": "online"}  # fmt: skip
        return {
            "meta": meta, "id": conv.conversation, "messages": last,
            "account_id": conv.account, "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, str(key))),
            "additional_attributes": {}, "agent_last_seen_at": 0, "assignee_last_seen_at": 0,
            "can_reply": True, "contact_last_seen_at": 0, "custom_attributes": {},
            "inbox_id": conv.inbox, "labels": [], "muted": False, "snoozed_until": None,
            "status": conv.status, "created_at": int(conv.created_at),
            "updated_at": conv.updated_at, "timestamp": int(conv.last_activity_at),
            "first_reply_created_at": 0, "unread_count": 0,
            "last_non_activity_message": self._api_message(conv, spoken[-1]) if spoken else None,
            "last_activity_at": int(conv.last_activity_at), "priority": None,
            "waiting_since": 0, "sla_policy_id": None,
        }  # fmt: skip

    def _list_messages(self, request: Request, conv: Conversation, token: str) -> Response:
        """Messages after an id, ascending, 100 at most; without `after`, the latest 20."""
        if token not in self.user_tokens:
            return JSONResponse({"error": "bots cannot list messages"}, status_code=401)
        stored = self.messages.get((conv.account, conv.conversation), [])
        after = request.query_params.get("after")
        if after:
            listed = [m for m in stored if m["id"] > int(after)][:100]
        else:
            listed = stored[-20:]
        contact = {**conv.contact, "type": "contact"}
        assignee = HUMAN if conv.assignee_type == "User" else None
        meta: dict[str, Any] = {"labels": [], "additional_attributes": {}, "contact": contact,
                "assignee": assignee, "agent_last_seen_at": None,
                "assignee_last_seen_at": None}  # fmt: skip
        payload = [self._api_message(conv, m) for m in listed]
        return JSONResponse({"meta": meta, "payload": payload})

    def _api_message(self, conv: Conversation, m: dict[str, Any]) -> dict[str, Any]:
        """A message as the REST API renders it: int type, epoch time, typed sender."""
        out = {key: value for key, value in m.items() if key != "sender"}
        out["created_at"] = int(m["created_at"])
        sender = m.get("sender")
        if sender is not None:
            kind = sender.get("type") or "contact"
            out["sender"] = {**sender, "type": kind}
            out["sender_type"] = {"contact": "Contact", "user": "User"}.get(kind, "AgentBot")
            out["sender_id"] = sender.get("id")
        return out

    def _create(
        self, conv: Conversation, body: dict[str, Any], *, sender: dict[str, Any]
    ) -> dict[str, Any]:
        """An outgoing message, as the create-message API stores it."""
        message = self._message(
            conv,
            body.get("content"),
            message_type=1,
            sender=sender,
            private=bool(body.get("private", False)),
            attributes=body.get("content_attributes") or {},
        )
        if not self.quiet:
            print(
                f"fake-chatwoot: message {message['id']} in conversation {conv.conversation}: "
                f"{message['content']!r}",
                flush=True,
            )
        if self.echo:
            self._send("message_created", self._message_event(conv, message))
        return message

    def _message(
        self,
        conv: Conversation,
        content: str | None,
        *,
        message_type: int,
        sender: dict[str, Any] | None,
        private: bool = False,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.next_id += 1
        self.touch(conv)
        conv.last_activity_at = conv.updated_at
        message = {
            "id": self.next_id, "content": content, "conversation_id": conv.conversation,
            "inbox_id": conv.inbox, "message_type": message_type, "content_type": "text",
            "content_attributes": attributes or {}, "status": "sent",
            "created_at": conv.updated_at, "private": private, "source_id": None,
            "sender": sender,
        }  # fmt: skip
        if sender is None:
            del message["sender"]  # activity messages have none
        self.messages.setdefault((conv.account, conv.conversation), []).append(message)
        return message

    def _set_status(self, conv: Conversation, status: str) -> None:
        before = conv.status
        self.touch(conv, status=status)
        if status == "resolved":  # Chatwoot writes an activity message, never sent as a webhook
            self._message(conv, "Conversation was marked resolved", message_type=2, sender=None)
        self._status_webhooks(conv, before)

    def _status_webhooks(
        self, conv: Conversation, before: str, changed: list[dict[str, Any]] | None = None
    ) -> None:
        """Changes as Chatwoot sends them: `conversation_status_changed` (changed_attributes
        null) when the status moved, and one `conversation_updated` listing every change."""
        changed = list(changed or [])
        if before != conv.status:
            self._send("conversation_status_changed", self._conversation_event(conv, None))
            changed.append({"status": {"previous_value": before, "current_value": conv.status}})
        if changed:
            stamp = {"updated_at": {"previous_value": None, "current_value": iso(conv.updated_at)}}
            self._send("conversation_updated", self._conversation_event(conv, [*changed, stamp]))

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

    # -- webhooks, shaped like Chatwoot's ----------------------------------------------------

    def _snapshot(self, conv: Conversation) -> dict[str, Any]:
        key = (conv.account, conv.conversation)
        public = [
            m for m in self.messages.get(key, []) if not m["private"] and m["message_type"] != 2
        ]
        contact = {"email": None, "phone_number": None, "identifier": None, **conv.contact}
        assignee = {"User": HUMAN, "AgentBot": BOT}.get(conv.assignee_type or "")
        latest = [{"id": m["id"], "message_type": m["message_type"], "status": m["status"],
                   "created_at": int(m["created_at"]), "updated_at": iso(m["created_at"])}
                  for m in public[-1:]]  # fmt: skip
        return {
            "id": conv.conversation, "inbox_id": conv.inbox, "channel": conv.channel,
            "status": conv.status, "account": {"id": conv.account, "name": "Demo"},
            "contact_inbox": {"source_id": conv.source_id or f"src-{contact['id']}"},
            "meta": {"sender": contact, "assignee": assignee, "assignee_type": conv.assignee_type,
                     "team": None},
            "messages": latest, "labels": [], "created_at": int(conv.created_at),
            "updated_at": conv.updated_at, "last_activity_at": int(conv.last_activity_at),
            "timestamp": int(conv.last_activity_at),
        }  # fmt: skip

    def _message_event(self, conv: Conversation, message: dict[str, Any]) -> dict[str, Any]:
        incoming = message["message_type"] == 0
        return {
            "id": message["id"], "content": message["content"], "content_type": "text",
            "content_attributes": message["content_attributes"],
            "message_type": "incoming" if incoming else "outgoing",
            "private": message["private"], "source_id": None,
            "created_at": iso(message["created_at"]),
            "sender": message["sender"], "inbox": {"id": conv.inbox, "name": "Inbox"},
            "account": {"id": conv.account, "name": "Demo"}, "additional_attributes": {},
            "conversation": self._snapshot(conv),
        }  # fmt: skip

    def _conversation_event(
        self, conv: Conversation, changed: list[dict[str, Any]] | None
    ) -> dict[str, Any]:
        return {**self._snapshot(conv), "changed_attributes": changed}

    def _send(self, event: str, payload: dict[str, Any]) -> None:
        if not self.webhook_url:
            return
        if self._dropped(event):
            # Lost on the way, like a webhook Chatwoot sent while the receiver was down.
            self.webhooks.append(
                {"event": event, "id": payload.get("id"), "status": "dropped", "payload": payload}
            )
            return
        self._spawn(self._webhook({**payload, "event": event}))

    def _dropped(self, event: str) -> bool:
        drop = self.drop
        if drop.events is not None and event not in drop.events:
            return False
        if drop.times is not None and drop.times <= 0:
            return False
        if drop.probability <= 0 or self.drop_random.random() >= drop.probability:
            return False
        if drop.times is not None:
            drop.times -= 1
        return True

    async def _webhook(self, payload: dict[str, Any]) -> None:
        assert self.webhook_url is not None
        body = rails_json(payload)
        headers = {"content-type": "application/json", "x-chatwoot-delivery": str(uuid.uuid4())}
        if self.secret:
            stamp = str(int(time.time()))
            headers["x-chatwoot-timestamp"] = stamp
            headers["x-chatwoot-signature"] = sign_chatwoot(body, self.secret, stamp)
        outcome: dict[str, Any] = {"event": payload["event"], "id": payload.get("id"),
                                   "payload": payload}  # fmt: skip
        try:
            # One client for every webhook: a new one each costs more CPU than the request
            # (its SSL context), which made the fake the bottleneck of any benchmark.
            if self._webhook_client is None:
                self._webhook_client = httpx.AsyncClient(
                    timeout=5,  # Chatwoot's WEBHOOK_TIMEOUT
                    limits=httpx.Limits(max_connections=100, max_keepalive_connections=100),
                )
            response = await self._webhook_client.post(
                self.webhook_url, content=body, headers=headers
            )
            outcome["status"] = response.status_code
            if response.status_code >= 300:
                print(f"fake-chatwoot: webhook answered {response.status_code}", flush=True)
        except httpx.HTTPError as exc:
            # Like Chatwoot: no retry, the event is lost for this receiver.
            outcome["status"] = type(exc).__name__
            print(f"fake-chatwoot: webhook failed: {exc!r}", flush=True)
        self.webhooks.append(outcome)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def settle(self) -> None:
        """Wait for the webhooks under way, so the caller sees them sent, in order."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks))

    async def settle_own(self, before: set[asyncio.Task[None]]) -> None:
        """Wait for the webhooks a request started (those not in `before`, all spawned since
        without an await between): its caller sees its own sent, without waiting for every
        other request's under way, which capped any load generator at about 40/s."""
        mine = self.tasks - before
        if mine:
            await asyncio.gather(*mine)

    # -- the people around the bot ------------------------------------------------------------

    async def define(self, request: Request) -> Response:
        conv = msgspec.json.decode(await request.body(), type=Conversation)
        self.touch(conv)
        conv.created_at = conv.created_at or conv.updated_at
        conv.last_activity_at = conv.last_activity_at or conv.updated_at
        self.conversations[(conv.account, conv.conversation)] = conv
        return JSONResponse({"conversation": conv.conversation})

    async def customer(self, request: Request) -> Response:
        said = msgspec.json.decode(await request.body(), type=Said)
        running = set(self.tasks)
        conv = self.landing(self.conversation(said.account, said.conversation))
        contact = {"email": None, "phone_number": None, "identifier": None, **conv.contact}
        message = self._message(conv, said.content, message_type=0, sender=contact)
        before = conv.status
        if conv.status == "resolved":  # Message#reopen_resolved_conversation: assignee kept
            self.touch(conv, status="pending" if self.inbox(conv.inbox).active_bot else "open")
        elif conv.status == "snoozed":
            self.touch(conv, status="open")
        self._status_webhooks(conv, before)
        payload = self._message_event(conv, message)
        payload["sender"] = contact
        self._send("message_created", payload)
        await self.settle_own(running)
        return JSONResponse({"id": message["id"], "conversation": conv.conversation,
                             "webhook": self.webhook_url is not None})  # fmt: skip

    def landing(self, conv: Conversation) -> Conversation:
        """Where the customer's message goes: with `lock_to_single_conversation` off, past a
        resolved conversation to the contact's last unresolved one in the inbox, or a new one
        (which Chatwoot announces with `conversation_created`)."""
        inbox = self.inbox(conv.inbox)
        if conv.status != "resolved" or inbox.lock_to_single_conversation:
            return conv
        theirs = [c for (a, _), c in sorted(self.conversations.items())
                  if a == conv.account and c.inbox == conv.inbox and c.contact == conv.contact
                  and c.status != "resolved"]  # fmt: skip
        if theirs:
            return theirs[-1]
        number = max(c for _, c in self.conversations) + 1
        new = self.conversation(conv.account, number)
        self.touch(new, inbox=conv.inbox, channel=conv.channel, contact=dict(conv.contact),
                   source_id=conv.source_id, assignee_type=None,
                   status="pending" if inbox.active_bot else "open")  # fmt: skip
        new.created_at = new.last_activity_at = new.updated_at
        self._send("conversation_created", self._conversation_event(new, None))
        return new

    async def agent(self, request: Request) -> Response:
        """A human agent replies: Chatwoot assigns them and opens the conversation."""
        said = msgspec.json.decode(await request.body(), type=Said)
        conv = self.conversation(said.account, said.conversation)
        if not said.private:
            before, assignee = conv.status, conv.assignee_type
            self.touch(conv, assignee_type="User", status="open")
            taken = [{"assignee_id": {"previous_value": None, "current_value": HUMAN["id"]}}]
            self._status_webhooks(conv, before, taken if assignee != "User" else None)
        message = self._message(
            conv, said.content, message_type=1, sender=HUMAN, private=said.private
        )
        self._send("message_created", self._message_event(conv, message))
        await self.settle()
        return JSONResponse({"id": message["id"]})

    async def assign(self, request: Request) -> Response:
        said = msgspec.json.decode(await request.body(), type=Said)
        conv = self.conversation(said.account, said.conversation)
        before = conv.assignee_type
        self.touch(conv, assignee_type=said.assignee_type)
        # As Chatwoot lists them: the columns that changed, ids before and after.
        ids = {
            "User": ("assignee_id", HUMAN["id"]),
            "AgentBot": ("assignee_agent_bot_id", BOT["id"]),
        }
        changes: dict[str, list[Any]] = {}
        if before in ids:
            changes[ids[before][0]] = [ids[before][1], None]
        if said.assignee_type in ids:
            column, number = ids[said.assignee_type]
            changes[column] = [changes.get(column, [None])[0], number]
        changed = [{k: {"previous_value": p, "current_value": c}} for k, (p, c) in changes.items()]
        self._send("conversation_updated", self._conversation_event(conv, changed))
        await self.settle()
        return JSONResponse({"assignee_type": conv.assignee_type})

    async def status(self, request: Request) -> Response:
        said = msgspec.json.decode(await request.body(), type=Said)
        self._set_status(self.conversation(said.account, said.conversation), said.status)
        await self.settle()
        return JSONResponse({"status": said.status})

    async def set_inbox(self, request: Request) -> Response:
        inbox = msgspec.json.decode(await request.body(), type=Inbox)
        self.inboxes[inbox.inbox] = inbox
        return JSONResponse(msgspec.to_builtins(inbox))

    async def list_requests(self, request: Request) -> Response:
        return JSONResponse(self.requests)

    async def list_webhooks(self, request: Request) -> Response:
        return JSONResponse(self.webhooks)

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

    async def set_drop(self, request: Request) -> Response:
        self.drop = msgspec.json.decode(await request.body(), type=Drop)
        return JSONResponse({"probability": self.drop.probability})

    async def reset_all(self, request: Request) -> Response:
        self.reset()
        return JSONResponse({"reset": True})

    def app(self) -> Any:
        """The ASGI app: a created message straight from the ASGI scope (what a load of
        replies costs: no routing, Request or JSONResponse), the rest through Starlette."""
        routed = self._routed()

        async def serve(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["method"] == "POST" and not self.rules:
                found = CREATE_PATH.fullmatch(scope["path"])
                if found is not None:
                    account, conversation = int(found[1]), int(found[2])
                    await self._create_fast(scope, receive, send, account, conversation)
                    return
            await routed(scope, receive, send)

        return serve

    async def _create_fast(
        self, scope: Any, receive: Any, send: Any, account: int, conversation: int
    ) -> None:
        """POST .../messages as `api` answers it when no fault rule is set: recorded alike."""
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        token = next((v.decode("latin-1") for k, v in scope["headers"]
                      if k == b"api_access_token"), "")  # fmt: skip
        data = msgspec.json.decode(body) if body else None
        record: dict[str, Any] = {
            "method": "POST", "path": scope["path"],
            "query": scope["query_string"].decode("latin-1"), "json": data,
            "token_ok": token in self.any_token, "at": time.time(),
        }  # fmt: skip
        self.requests.append(record)
        payload: Any
        if token in self.any_token:
            sender = BOT if token in self.tokens else HUMAN
            conv = self.conversation(account, conversation)
            status, payload = 200, self._create(conv, data or {}, sender=sender)
        else:
            status, payload = 401, {"errors": ["Invalid Access Token"]}
        record["answered"] = status
        out = msgspec.json.encode(payload)
        headers = [*JSON_HEADERS, (b"content-length", str(len(out)).encode())]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": out})

    def _routed(self) -> Starlette:
        return Starlette(routes=[
            Route("/api/v1/accounts/{account:int}/conversations", self.start,
                  methods=["POST"]),
            Route("/api/v1/accounts/{account:int}/conversations", self.api, methods=["GET"]),
            Route(API + "/messages", self.api, methods=["GET", "POST"]),
            Route("/api/v1/accounts/{account:int}/contacts/{contact:int}/conversations",
                  self.contact_conversations, methods=["GET"]),
            Route(API + "/toggle_status", self.api, methods=["POST"]),
            Route(API + "/toggle_typing_status", self.api, methods=["POST"]),
            Route("/api/v1/profile", self.profile, methods=["GET"]),
            Route("/_fake/conversations", self.define, methods=["POST"]),
            Route("/_fake/customer", self.customer, methods=["POST"]),
            Route("/_fake/agent", self.agent, methods=["POST"]),
            Route("/_fake/assign", self.assign, methods=["POST"]),
            Route("/_fake/status", self.status, methods=["POST"]),
            Route("/_fake/inboxes", self.set_inbox, methods=["POST"]),
            Route("/_fake/requests", self.list_requests, methods=["GET"]),
            Route("/_fake/messages", self.list_messages, methods=["GET"]),
            Route("/_fake/webhooks", self.list_webhooks, methods=["GET"]),
            Route("/_fake/faults", self.set_faults, methods=["POST"]),
            Route("/_fake/drop", self.set_drop, methods=["POST"]),
            Route("/_fake/reset", self.reset_all, methods=["POST"]),
        ])  # fmt: skip


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
    parser.add_argument(
        "--quiet", action="store_true", help="no line on stdout per message created"
    )
    parser.add_argument("--faults", default="", help='initial fault rules, JSON: {"rules": [...]}')
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault dice")
    parser.add_argument(
        "--drop-webhooks", type=float, default=0.0, metavar="P",
        help="drop each webhook with probability P (lost, never retried, like Chatwoot's)",
    )  # fmt: skip
    parser.add_argument(
        "--lock-to-single-conversation", action="store_true",
        help="every inbox reopens a resolved conversation (Chatwoot's default: a new one)",
    )  # fmt: skip
    parser.add_argument(
        "--no-active-bot", action="store_true",
        help="no inbox has an active agent bot: reopened conversations are `open`",
    )  # fmt: skip
    args = parser.parse_args()
    fake = FakeChatwoot(
        tokens=set(args.token) or {"demo-bot-token"},
        user_tokens=set(args.user_token),
        webhook_url=args.webhook_url,
        secret=args.secret,
        echo=not args.no_echo,
        quiet=args.quiet,
        seed=args.seed,
        drop=Drop(probability=args.drop_webhooks),
        inbox_defaults=Inbox(
            lock_to_single_conversation=args.lock_to_single_conversation,
            active_bot=not args.no_active_bot,
        ),
    )
    if args.faults:
        fake.rules = msgspec.json.decode(args.faults, type=Faults).rules
    uvicorn.run(fake.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
