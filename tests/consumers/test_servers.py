"""The servers file `switchboard up` writes: commands find its servers from any directory,
and a stale one is one clear line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from consumers import servers
from ingress.errors import ConfigError
from ingress.settings import Settings
from ingress.topology import Topology
from tests.conftest import BOT_TOKEN, Fake
from tests.consumers.test_cli import run


def record(redis_url: str, database_url: str, streams: Path, pid: int) -> servers.Servers:
    return servers.Servers(
        pid=pid,
        home="/somewhere/.switchboard",
        ingress_url="http://127.0.0.1:8000",
        env={
            "REDIS_URL": redis_url,
            "DATABASE_URL": database_url,
            "SWITCHBOARD_STREAMS": str(streams),
            "CHATWOOT_API_TOKEN": "a-token",
        },
    )


def ended_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_written_for_its_owner_only(tmp_path: Path) -> None:
    """The file may hold tokens: mode 0600 whatever the umask, and it reads back."""
    path = tmp_path / "state" / "servers.json"
    written = record("redis://r/0", "postgresql://p/sb", tmp_path / "s.yaml", os.getpid())
    old = os.umask(0o022)
    try:
        servers.write(path, written)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert servers.read(path) == written


def test_removed_only_by_the_up_that_wrote_it(tmp_path: Path) -> None:
    """An `up` stopping removes its own file, not one a later `up` wrote over it."""
    path = tmp_path / "servers.json"
    servers.write(path, record("redis://r/0", "postgresql://p/sb", tmp_path, pid=12345))
    servers.remove(path, pid=999)
    assert path.exists()
    servers.remove(path, pid=12345)
    assert not path.exists()


def test_used_when_the_urls_are_unset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """No REDIS_URL/DATABASE_URL: the file's servers, and one line saying so; a variable the
    environment sets still wins over the file's."""
    environ = {"SWITCHBOARD_HOME": str(tmp_path), "CHATWOOT_API_TOKEN": "mine"}
    settings = Settings.from_env(environ)
    servers.write(settings.servers_file, record("redis://r/0", "postgresql://p/sb", tmp_path,
                                                os.getpid()))  # fmt: skip
    done, taken = servers.apply(settings, environ)
    assert (done.redis_url, done.database_url) == ("redis://r/0", "postgresql://p/sb")
    assert done.chatwoot_api_token is not None and done.chatwoot_api_token.reveal() == "mine"
    assert "CHATWOOT_API_TOKEN" not in taken and taken["REDIS_URL"] == "redis://r/0"
    assert capsys.readouterr().err == (
        f"using the servers `switchboard up` started (from {tmp_path / 'servers.json'})\n"
    )


def test_not_used_when_a_url_is_set(tmp_path: Path) -> None:
    """REDIS_URL set: the environment is the whole configuration, the file is not read."""
    environ = {"SWITCHBOARD_HOME": str(tmp_path), "REDIS_URL": "redis://mine/0"}
    settings = Settings.from_env(environ)
    servers.write(settings.servers_file, record("redis://r/0", "postgresql://p/sb", tmp_path,
                                                ended_pid()))  # fmt: skip
    assert servers.apply(settings, environ) == (settings, {})


def test_a_stale_file_is_one_clear_problem(tmp_path: Path) -> None:
    """The `up` that wrote it is gone (killed, say): one line saying so and what to do."""
    environ = {"SWITCHBOARD_HOME": str(tmp_path)}
    settings = Settings.from_env(environ)
    servers.write(settings.servers_file, record("redis://r/0", "postgresql://p/sb", tmp_path,
                                                ended_pid()))  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        servers.apply(settings, environ)
    [line] = caught.value.problems
    assert "are gone" in line and "switchboard up" in line


def bare_env(home: Path) -> dict[str, str]:
    """A user's environment in another terminal: none of the pipeline's variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "DATABASE_URL", "SWITCHBOARD_STREAMS")}  # fmt: skip
    return env | {"SWITCHBOARD_HOME": str(home), "LOG_FORMAT": "json"}


async def test_commands_find_the_servers_from_any_directory(
    redis: aioredis.Redis, topology: Topology, redis_url: str, database_url: str,
    streams_file: Path, tmp_path: Path, fake: Fake,
) -> None:  # fmt: skip
    """`streams` and `doctor` run from another directory, with no URL in the environment,
    use what `up` recorded (the demo's Chatwoot included) and say so on stderr."""
    home = tmp_path / "home"
    recorded = record(redis_url, database_url, streams_file, os.getpid())
    recorded.env.update(CHATWOOT_BASE_URL=fake.url, CHATWOOT_API_TOKEN=BOT_TOKEN,
                        CHATWOOT_WEBHOOK_SECRETS="s")  # fmt: skip
    servers.write(home / "servers.json", recorded)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for command in ("streams", "doctor"):
        done = subprocess.run([*run_args(command)], env=bare_env(home), cwd=elsewhere,
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "using the servers `switchboard up` started" in done.stderr
    assert topology.key("events") in done.stdout


def test_a_stale_file_stops_a_command_in_one_line(tmp_path: Path) -> None:
    """A command meeting a stale file exits 2 with one line, no traceback."""
    home = tmp_path / "home"
    servers.write(home / "servers.json", record("redis://127.0.0.1:1/0",
                                                "postgresql://p@127.0.0.1:1/sb",
                                                tmp_path / "none.yaml", ended_pid()))  # fmt: skip
    done = run(bare_env(home), "streams")
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("switchboard streams: the servers `switchboard up` started")


def run_args(command: str) -> list[str]:
    return [str(Path(sys.executable).parent / "switchboard"), command]


def test_the_packaged_streams_yaml_serves_any_directory(
    tmp_path: Path, redis_url: str, database_url: str
) -> None:
    """No SWITCHBOARD_STREAMS and no streams.yaml in the working directory: the packaged
    default is used (it used to fail with "streams.yaml: cannot read")."""
    env = bare_env(tmp_path / "no-home") | {"REDIS_URL": redis_url, "DATABASE_URL": database_url}
    done = subprocess.run(run_args("streams"), env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "sb:events" in done.stdout and "using the servers" not in done.stderr
