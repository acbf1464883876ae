"""The ops app: routes, the guard in front of them, and the connections it holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from consumers import egress
from consumers.clock import utcnow
from consumers.opsapp import api, apps, pages, params
from consumers.opsapp.context import Context, context
from consumers.opsapp.guard import Guard
from consumers.store import Store
from ingress.connect import redis_client
from ingress.settings import Settings
from ingress.topology import Topology

View = Callable[[Request], Awaitable[Response]]


def guarded(view: View, *, api_view: bool) -> View:
    """The view behind the guard; a bad query parameter answered 400, naming it."""

    async def run(request: Request) -> Response:
        if not context(request).guard.allowed(request):
            if api_view:
                refused = api.json({"error": "unauthorized: Authorization: Bearer OPS_TOKEN"}, 401)
                refused.headers["www-authenticate"] = 'Bearer realm="switchboard-ops"'
                return refused
            return RedirectResponse("/login", status_code=303)
        try:
            return await view(request)
        except params.BadParameter as exc:
            if api_view:
                return api.json({"error": str(exc), "parameter": exc.name}, 400)
            return pages.bad_parameter(exc)

    return run


def routes() -> list[Route]:
    def a(path: str, view: View, method: str = "GET") -> Route:
        return Route(f"/api{path}", guarded(view, api_view=True), methods=[method])

    def p(path: str, view: View, method: str = "GET") -> Route:
        return Route(path, guarded(view, api_view=False), methods=[method])

    return [
        a("/health", api.health),
        a("/streams", api.streams),
        a("/dead", api.dead_list),
        a("/dead/{entry}", api.dead_show),
        a("/dead/{entry}/replay", api.dead_replay, "POST"),
        a("/dead/{entry}/purge", api.dead_purge, "POST"),
        a("/webhooks", api.webhooks),
        a("/conversations", api.conversations),
        a("/conversations/{account}/{conversation}", api.conversation),
        a("/messages/hourly", api.messages_per_hour),
        a("/apps", apps.listed),
        a("/apps", apps.added, "POST"),
        a("/apps/{name}", apps.changed, "PATCH"),
        a("/apps/{name}", apps.removed, "DELETE"),
        p("/", pages.health),
        p("/conversations", pages.conversations),
        p("/conversations/{account}/{conversation}", pages.conversation),
        p("/webhooks", pages.webhooks),
        p("/dead", pages.dead),
        p("/dead/{entry}/replay", pages.replay_confirm),
        p("/dead/{entry}/replay", pages.replay, "POST"),
        # The sign-in form is the one page anyone may see.
        Route("/login", pages.login, methods=["GET", "POST"]),
    ]


def create_app(
    settings: Settings,
    topology: Topology,
    *,
    clock: Callable[[], dt.datetime] = utcnow,
    form_key: bytes | None = None,
) -> Starlette:
    settings.require("redis_url", "database_url")
    assert settings.redis_url is not None and settings.database_url is not None
    redis_url, database_url = settings.redis_url, settings.database_url
    guard = Guard(settings.ops_token, form_key or secrets.token_bytes(32))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        redis = redis_client(redis_url)
        store = await Store.connect(database_url, min_size=1, max_size=4)
        policy = egress.Policy(
            allow_http=settings.allow_http_apps, allow_private=settings.allow_private_apps
        )
        app.state.ops = Context(redis, store, topology, guard, clock, policy)
        try:
            yield
        finally:
            await store.close()
            await redis.aclose()

    return Starlette(routes=routes(), lifespan=lifespan)
