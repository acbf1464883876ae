"""Worker apps in PostgreSQL: add, list, get, update, remove."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from consumers.errors import StoreError
from consumers.store import Store
from consumers.store.apps import AppSQL

SECRET = "whsec_" + "QUFB" * 11


@pytest.fixture
async def apps(store: Store) -> AsyncIterator[Store]:
    async with store.transaction() as tx:
        await tx.conn.execute("TRUNCATE worker_apps")
    yield store


async def test_add_get_list_update_remove(apps: Store) -> None:
    """The whole life of an app, and a name taken twice is refused, not overwritten."""
    async with apps.transaction() as tx:
        sql = AppSQL(tx.conn)
        assert await sql.add_app("bot", "https://a.example/t", SECRET, timeout_s=5, enabled=True)
        assert not await sql.add_app("bot", "https://b.example/", SECRET, timeout_s=9, enabled=True)
    async with apps.transaction() as tx:
        sql = AppSQL(tx.conn)
        app = await sql.get_app("bot")
        assert app is not None and app.url == "https://a.example/t" and app.timeout_s == 5
        assert app.secret.reveal() == SECRET and SECRET not in repr(app)
        assert await sql.update_app("bot", url="https://c.example/", enabled=False)
        assert not await sql.update_app("nobody", enabled=False)
        changed = await sql.get_app("bot")
        assert changed is not None and changed.url == "https://c.example/" and not changed.enabled
        assert changed.timeout_s == 5 and changed.updated_at >= app.updated_at
        assert [a.name for a in await sql.list_apps()] == ["bot"]
        assert await sql.remove_app("bot")
        assert not await sql.remove_app("bot")
        assert await sql.get_app("bot") is None


@pytest.mark.parametrize(
    ("name", "timeout_s"),
    [
        pytest.param("Bad Name", 5.0, id="name"),
        pytest.param("bot", 0.0, id="zero-timeout"),
        pytest.param("bot", 1000.0, id="long-timeout"),
    ],
)
async def test_the_table_refuses_bad_values(apps: Store, name: str, timeout_s: float) -> None:
    """The CHECKs hold even for a writer that skipped the CLI's validation."""
    with pytest.raises(StoreError) as caught:
        async with apps.transaction() as tx:
            await AppSQL(tx.conn).add_app(name, "https://a.example/", SECRET,
                                          timeout_s=timeout_s, enabled=True)  # fmt: skip
    assert not caught.value.retryable
