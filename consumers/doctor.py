"""`switchboard doctor`: the version, then each thing the pipeline needs, one line each —
Redis, PostgreSQL and its schema, the groups, and Chatwoot (reachable, tokens valid, webhook
secret configured). Problems go to stderr; the exit status says whether there were any.
Secrets are never printed: only whether they are set and whether Chatwoot took them."""

from __future__ import annotations

import sys
from importlib import metadata
from typing import TextIO

from consumers import ops
from consumers.chatwoot import ChatwootClient
from consumers.errors import ChatwootError, StoreError
from consumers.store import Store, schema
from ingress.connect import UNAVAILABLE, redis_client
from ingress.settings import Secret, Settings
from ingress.topology import Topology

VERSION = metadata.version("chatwoot-switchboard")
# What Chatwoot answers a valid agent bot token on an endpoint bots may not call (its
# AccessTokenAuthHelper); an unknown token gets "Invalid Access Token" instead.
BOTS_REFUSED = "not authorized for bots"


class Report:
    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.problems: list[str] = []

    def ok(self, line: str) -> None:
        self.out.write(line + "\n")

    def problem(self, line: str) -> None:
        self.problems.append(line)


async def run(settings: Settings, topology: Topology, out: TextIO = sys.stdout) -> int:
    report = Report(out)
    report.ok(f"switchboard {VERSION}")
    report.ok(f"streams.yaml: {settings.streams_path} (prefix {topology.prefix})")
    await _redis(settings, topology, report)
    await _postgres(settings, report)
    await chatwoot(settings, report)
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)  # noqa: T201
    return 1 if report.problems else 0


async def _redis(settings: Settings, topology: Topology, report: Report) -> None:
    if settings.redis_url is None:
        report.problem("REDIS_URL is not set")
        return
    try:
        redis = redis_client(settings.redis_url)
        try:
            info = await redis.info("server")
            report.ok(f"redis: ok, version {info.get('redis_version')}")
            for status in await ops.streams(redis, topology):
                names = ", ".join(g.name for g in status.groups) or "none"
                report.ok(f"  {status.key}: {status.length} entries, groups: {names}")
        finally:
            await redis.aclose()
    except UNAVAILABLE as exc:
        report.problem(f"redis: {exc}")


async def _postgres(settings: Settings, report: Report) -> None:
    if settings.database_url is None:
        report.problem("DATABASE_URL is not set")
        return
    try:
        store = await Store.connect(settings.database_url, max_size=1)
        try:
            version = await store.schema_version()
        finally:
            await store.close()
    except StoreError as exc:
        report.problem(f"postgres: {exc}")
        return
    wrong = schema.problem(version)
    if wrong is not None:
        report.problem(f"postgres: {wrong}")
    else:
        report.ok(f"postgres: ok, schema version {version}")


async def chatwoot(settings: Settings, report: Report) -> None:
    """Reachable, the bot token valid, the user token valid if set, a webhook secret set."""
    if settings.webhook_secrets:
        report.ok(f"webhook secrets: {len(settings.webhook_secrets)} configured")
    elif settings.allow_unsigned_webhooks:
        report.ok("webhook secrets: none, unsigned webhooks allowed (ALLOW_UNSIGNED_WEBHOOKS)")
    else:
        report.problem("CHATWOOT_WEBHOOK_SECRETS is not set: the ingress refuses to start")
    base, bot = settings.chatwoot_base_url, settings.chatwoot_api_token
    if base is None or bot is None:
        missing = [n for n, v in (("CHATWOOT_BASE_URL", base), ("CHATWOOT_API_TOKEN", bot))
                   if v is None]  # fmt: skip
        report.problem(f"{' and '.join(missing)} not set: replies cannot be delivered")
        return
    async with ChatwootClient(base, bot, timeout=5.0) as client:
        try:
            status, body = await client.profile(bot)
        except ChatwootError as exc:
            report.problem(f"chatwoot: {base} cannot be reached ({exc})")
            return
        report.ok(f"chatwoot: {base} reachable")
        _bot_token(status, body, report)
        if settings.chatwoot_user_token is not None:
            await _user_token(client, settings.chatwoot_user_token, report)
        else:
            report.ok("chatwoot user token: not set (no message lists: backfill is off)")


def _bot_token(status: int, body: str, report: Report) -> None:
    if status == 401 and BOTS_REFUSED in body:
        report.ok("chatwoot bot token: ok (an agent bot's)")
    elif 200 <= status < 300:
        report.ok("chatwoot bot token: ok, but it is a user's token: replies are posted as "
                  "that user, and the bot's own echoes are recognised by ext_ref only")  # fmt: skip
    elif status == 401:
        report.problem("chatwoot bot token: refused by Chatwoot (CHATWOOT_API_TOKEN invalid)")
    else:
        report.problem(f"chatwoot bot token: unexpected answer {status} from /api/v1/profile")


async def _user_token(client: ChatwootClient, token: Secret, report: Report) -> None:
    try:
        status, _ = await client.profile(token)
    except ChatwootError as exc:
        report.problem(f"chatwoot user token: {exc}")
        return
    if 200 <= status < 300:
        report.ok("chatwoot user token: ok")
    elif status == 401:
        report.problem("chatwoot user token: refused by Chatwoot (CHATWOOT_USER_TOKEN invalid)")
    else:
        report.problem(f"chatwoot user token: unexpected answer {status} from /api/v1/profile")
