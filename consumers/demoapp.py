"""`switchboard up --demo`'s worker app: the echo app registered, and a demo inbox routed to it,
so the demo shows a turn pushed over HTTP and answered inline beside the Redis echo agent."""

from __future__ import annotations

import secrets
from pathlib import Path

from consumers import signing
from consumers.store import Store
from consumers.store.apps import AppSQL

APP = "echo-app"
INBOX = 2  # the fake Chatwoot's inbox 1 stays the echo agent's
CONVERSATION = 2
ROUTE = f"""  - name: demo-app
    inbox: {INBOX}
    stream: "turns:demo-app"
    app: {APP}
"""


def streams_file(source: Path, home: Path) -> Path:
    """A copy of streams.yaml whose first route sends the demo inbox's turns to the app."""
    text = source.read_text()
    head, found, routes = text.partition("\nroutes:\n")
    routed = f"{head}\nroutes:\n{ROUTE}{routes}" if found else f"{text}\nroutes:\n{ROUTE}"
    path = home / "streams-demo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(routed)
    return path


async def register(database_url: str, url: str) -> str:
    """Register (or point again) the demo app at `url` with a new secret; the secret."""
    secret = signing.new_secret(secrets.token_bytes(signing.KEY_BYTES))
    store = await Store.connect(database_url, max_size=1)
    try:
        async with store.transaction() as tx:
            sql = AppSQL(tx.conn)
            if not await sql.add_app(APP, url, secret, timeout_s=10, enabled=True):
                await sql.update_app(APP, url=url, secret=secret, enabled=True)
    finally:
        await store.close()
    return secret


def banner(fake: str) -> list[str]:
    return [
        "",
        f"A worker app over HTTP ({APP}) answers inbox {INBOX}: a pushed turn, answered inline:",
        f"  curl -s -X POST {fake}/_fake/conversations -H 'content-type: application/json' "
        f'-d \'{{"conversation": {CONVERSATION}, "inbox": {INBOX}}}\'',
        f"  curl -s -X POST {fake}/_fake/customer -H 'content-type: application/json' "
        f'-d \'{{"conversation": {CONVERSATION}, "content": "Hello, app!"}}\'',
    ]
