"""`switchboard meta` as an operator runs it: a real process against real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from consumers.store import Store
from consumers.store.apps import AppSQL
from consumers.store.forwards import Forward

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHBOARD, "meta", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


async def test_map_list_unmap(store: Store, process_env: dict[str, str]) -> None:
    """An owner is mapped to a registered app, listed, remapped, and unmapped."""
    async with store.transaction() as tx:
        for name in ("shop", "blog"):
            await AppSQL(tx.conn).add_app(name, "https://x.example/", SECRET, timeout_s=5,
                                          enabled=True)  # fmt: skip
    mapped = run(process_env, "map", "1784", "shop")
    assert (mapped.returncode, mapped.stdout) == (0, "comments on media of 1784 go to shop\n")
    assert run(process_env, "map", "1784", "blog").returncode == 0
    assert run(process_env, "maps").stdout == "1784\tblog\n"
    assert run(process_env, "unmap", "1784").returncode == 0
    assert run(process_env, "maps").stdout == ""
    again = run(process_env, "unmap", "1784")
    assert again.returncode == 1 and "not mapped" in again.stderr


async def test_bad_owner_and_unknown_app_are_refused(
    store: Store, process_env: dict[str, str]
) -> None:
    """An owner id that is not digits is bad input (2); an app nobody added is refused (1):
    a typo must not silently send comments nowhere."""
    bad = run(process_env, "map", "../1", "shop")
    assert bad.returncode == 2 and "digits" in bad.stderr
    unknown = run(process_env, "map", "1784", "nosuch")
    assert unknown.returncode == 1 and "no app 'nosuch'" in unknown.stderr
    async with store.transaction() as tx:
        assert await tx.owner_maps() == []


async def test_forwards_lists_the_latest_outcomes(
    store: Store, process_env: dict[str, str]
) -> None:
    """`meta forwards` shows each comment's outcome, owner, app and reason."""
    async with store.transaction() as tx:
        await tx.record_forward(Forward(comment_key="comments:9", stream_id="1-0",
                                        delivery_id="meta:x", media_id="5", owner_id="1784",
                                        outcome="ignored",
                                        detail="owner 1784 is mapped to no app"))  # fmt: skip
    listed = run(process_env, "forwards")
    assert listed.stdout == (
        "comments:9\tignored\towner=1784\tapp=-\tattempts=1\towner 1784 is mapped to no app\n"
    )
