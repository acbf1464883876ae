"""`switchboard apps` as a user runs it: a real process against real PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from consumers.store import Store
from consumers.store.apps import AppSQL

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SWITCHBOARD, "apps", *args], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip


@pytest.fixture
async def clean(store: Store) -> AsyncIterator[Store]:
    async with store.transaction() as tx:
        await tx.conn.execute("TRUNCATE worker_apps")
    yield store


@pytest.fixture
def env(process_env: dict[str, str]) -> dict[str, str]:
    # Local addresses only in this sandbox: the public-address check has its own tests.
    return process_env | {"ALLOW_HTTP_APPS": "1", "ALLOW_PRIVATE_APPS": "1"}


async def test_add_list_update_remove_never_print_the_secret(
    clean: Store, env: dict[str, str]
) -> None:
    """The life of an app through the command; a given secret appears in no output."""
    added = run(env, "add", "bot", "http://127.0.0.1:9/turns", "--secret", SECRET, "--timeout", "3")
    assert added.returncode == 0 and added.stdout == "added bot\n", added.stderr
    listed = run(env, "list")
    assert listed.returncode == 0
    assert listed.stdout.splitlines()[1].split() == [
        "bot", "http://127.0.0.1:9/turns", "whsec_…", "3s", "yes"
    ]  # fmt: skip
    updated = run(env, "update", "bot", "--disable", "--timeout", "7")
    assert updated.returncode == 0 and updated.stdout == "updated bot\n"
    async with clean.transaction() as tx:
        app = await AppSQL(tx.conn).get_app("bot")
    assert app is not None and not app.enabled and app.timeout_s == 7
    assert app.secret.reveal() == SECRET
    for done in (added, listed, updated):
        assert SECRET[6:] not in done.stdout + done.stderr
    removed = run(env, "remove", "bot")
    assert removed.returncode == 0 and removed.stdout == "removed bot\n"
    again = run(env, "remove", "bot")
    assert again.returncode == 1 and again.stderr == "switchboard apps: no app named bot\n"


async def test_a_generated_secret_is_printed_once_on_request(
    clean: Store, env: dict[str, str]
) -> None:
    """Without --print-secret the generated secret is not shown; with it, once, on stdout."""
    quiet = run(env, "add", "quiet", "http://127.0.0.1:9/")
    assert quiet.returncode == 0 and "whsec_" not in quiet.stdout
    shown = run(env, "add", "shown", "http://127.0.0.1:9/", "--print-secret")
    assert shown.returncode == 0
    line = shown.stdout.splitlines()[-1]
    assert line.startswith("secret: whsec_")
    async with clean.transaction() as tx:
        app = await AppSQL(tx.conn).get_app("shown")
    assert app is not None and line == f"secret: {app.secret.reveal()}"
    assert "whsec_" + "…" in run(env, "list").stdout
    assert app.secret.reveal() not in run(env, "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("add", "Bad Name", "https://x.example/"), "NAME must be", id="name"),
        pytest.param(
            ("add", "bot", "ftp://x.example/"), "URL: the URL must start with https://", id="scheme"
        ),  # fmt: skip
        pytest.param(
            ("add", "bot", "https://127.0.0.1/"),
            "URL: the host '127.0.0.1' resolves",
            id="loopback",
        ),  # fmt: skip
        pytest.param(("add", "bot", "http://x.example/"), "must be https", id="http"),
        pytest.param(
            ("add", "bot", "https://1.1.1.1/", "--secret", "hunter2"),
            "--secret: a secret must start with whsec_",
            id="secret",
        ),  # fmt: skip
        pytest.param(
            ("add", "bot", "https://1.1.1.1/", "--timeout", "0"), "--timeout must be", id="timeout"
        ),  # fmt: skip
    ],
)
async def test_bad_input_is_one_line_and_exit_2(
    clean: Store, process_env: dict[str, str], args: tuple[str, ...], message: str
) -> None:
    """Bad input: one line on stderr naming the problem (never the secret), status 2."""
    done = run(process_env, *args)
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "hunter2" not in done.stderr


async def test_a_taken_name_is_refused(clean: Store, env: dict[str, str]) -> None:
    """Adding a name twice leaves the first app as it was."""
    assert run(env, "add", "bot", "http://127.0.0.1:9/a").returncode == 0
    done = run(env, "add", "bot", "http://127.0.0.1:9/b")
    assert done.returncode == 1 and "exists" in done.stderr
    async with clean.transaction() as tx:
        app = await AppSQL(tx.conn).get_app("bot")
    assert app is not None and app.url == "http://127.0.0.1:9/a"
