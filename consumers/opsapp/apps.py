"""The worker apps' JSON API (`/api/apps`): what `switchboard apps` does, for tools and the ops
views. Secrets are never shown, except a generated one, once, in the answer that made it."""

from __future__ import annotations

import re
import secrets
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from consumers import appcli, egress, signing
from consumers.appclient import system_resolve
from consumers.opsapp.api import json, refused
from consumers.opsapp.context import context
from consumers.store.apps import UNSET, AppSQL, Unset, WorkerApp
from ingress.topology import APP_NAME

MAX_BODY = 16 * 1024
Body = TypeVar("Body")


class NewApp(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    name: str
    url: str
    secret: str | None = None  # None: one is generated and answered once
    timeout_s: float = 10.0
    enabled: bool = True


class AppChange(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    url: str | None = None
    secret: str | None = None
    new_secret: bool = False
    timeout_s: float | None = None
    enabled: bool | None = None


def shown(app: WorkerApp) -> dict[str, object]:
    return {
        "name": app.name,
        "url": app.url,
        "secret": signing.masked(app.secret.reveal()),
        "timeout_s": app.timeout_s,
        "enabled": app.enabled,
        "created_at": app.created_at,
        "updated_at": app.updated_at,
    }


async def listed(request: Request) -> Response:
    async with context(request).store.transaction() as tx:
        return json([shown(app) for app in await AppSQL(tx.conn).list_apps()])


async def added(request: Request) -> Response:
    ctx = context(request)
    if not ctx.guard.api_action_allowed(request):
        return refused()
    body = await _body(request, NewApp)
    if isinstance(body, Response):
        return body
    if not APP_NAME.fullmatch(body.name):
        return _bad("name", "1-63 lower-case letters, digits, - or _")
    problem = await _checked(request, body.url, body.secret, body.timeout_s)
    if problem is not None:
        return problem
    generated = body.secret is None
    secret = body.secret or signing.new_secret(secrets.token_bytes(signing.KEY_BYTES))
    async with ctx.store.transaction() as tx:
        done = await AppSQL(tx.conn).add_app(
            body.name, body.url, secret, timeout_s=body.timeout_s, enabled=body.enabled
        )
    if not done:
        return json({"error": f"an app named {body.name} exists (PATCH it)"}, 409)
    return json({"name": body.name} | ({"secret": secret} if generated else {}), 201)


async def changed(request: Request) -> Response:
    ctx = context(request)
    if not ctx.guard.api_action_allowed(request):
        return refused()
    body = await _body(request, AppChange)
    if isinstance(body, Response):
        return body
    if body.secret is not None and body.new_secret:
        return _bad("secret", "give a secret or ask for a new one, not both")
    problem = await _checked(request, body.url, body.secret, body.timeout_s)
    if problem is not None:
        return problem
    secret: str | Unset = UNSET
    if body.secret is not None:
        secret = body.secret
    elif body.new_secret:
        secret = signing.new_secret(secrets.token_bytes(signing.KEY_BYTES))
    name = request.path_params["name"]
    async with ctx.store.transaction() as tx:
        done = await AppSQL(tx.conn).update_app(
            name,
            url=body.url if body.url is not None else UNSET,
            secret=secret,
            timeout_s=body.timeout_s if body.timeout_s is not None else UNSET,
            enabled=body.enabled if body.enabled is not None else UNSET,
        )
    if not done:
        return json({"error": f"no app named {name}"}, 404)
    new = {"secret": secret} if body.new_secret and isinstance(secret, str) else {}
    return json({"name": name} | new)


async def removed(request: Request) -> Response:
    ctx = context(request)
    if not ctx.guard.api_action_allowed(request):
        return refused()
    name = request.path_params["name"]
    async with ctx.store.transaction() as tx:
        done = await AppSQL(tx.conn).remove_app(name)
    if not done:
        return json({"error": f"no app named {name}"}, 404)
    return json({"name": name, "removed": True})


async def _body(request: Request, kind: type[Body]) -> Body | Response:
    raw = await request.body()
    if len(raw) > MAX_BODY:
        return json({"error": f"the body is over {MAX_BODY} bytes"}, 413)
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        return _bad(_field(str(exc)), str(exc))
    except msgspec.DecodeError as exc:
        return _bad("body", f"not JSON: {exc}")


async def _checked(
    request: Request, url: str | None, secret: str | None, timeout_s: float | None
) -> Response | None:
    """The same checks as `switchboard apps`: the URL against the egress policy (a URL is user
    input: no private addresses unless allowed), the secret's form, the timeout's range."""
    if url is not None:
        try:
            await egress.check(url, context(request).egress, system_resolve)
        except egress.EgressError as exc:
            return _bad("url", str(exc))
    if secret is not None:
        try:
            signing.key_of(secret)
        except signing.SecretError as exc:
            return _bad("secret", str(exc))
    if timeout_s is not None and not 0 < timeout_s <= appcli.MAX_TIMEOUT_S:
        return _bad("timeout_s", f"above 0 and at most {appcli.MAX_TIMEOUT_S:g} seconds")
    return None


def _field(error: str) -> str:
    """The field a msgspec error names: "... - at `$.url`", "missing required field `url`",
    "unknown field `x`"."""
    found = re.search(r"at `\$\.(\w+)", error) or re.search(r"field `(\w+)`", error)
    return found.group(1) if found else "body"


def _bad(field: str, why: str) -> Response:
    return json({"error": why, "parameter": field}, 422)
