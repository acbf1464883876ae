"""The servers file: `switchboard up` writes the URLs of what it runs (and, for `--demo`, the
fake Chatwoot it configured) so that every other command, from any directory, finds them
when REDIS_URL and DATABASE_URL are unset.

It lives at `Settings.servers_file` (per user, or under SWITCHBOARD_HOME when that is set),
mode 0600 since it may hold tokens, and is removed when `up` stops; the pid of `up` in it
tells a file left by a killed `up` (stale) from a live one.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import msgspec

from ingress.errors import ConfigError
from ingress.settings import Settings

# The only variables the file may set: what `up` chose, never anything else of its env.
KEYS = (
    "REDIS_URL",
    "DATABASE_URL",
    "SWITCHBOARD_STREAMS",
    "CHATWOOT_BASE_URL",
    "CHATWOOT_API_TOKEN",
    "CHATWOOT_WEBHOOK_SECRETS",
    "CHATWOOT_BOT_ID",
)


class Servers(msgspec.Struct, frozen=True, kw_only=True):
    pid: int  # of `switchboard up`
    home: str
    ingress_url: str
    env: dict[str, str]


def write(path: Path, servers: Servers) -> None:
    """Atomically, readable by its owner only (created 0600, never widened by a umask)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(msgspec.json.format(msgspec.json.encode(servers)))
    os.replace(temporary, path)


def read(path: Path) -> Servers | None:
    """The file's contents; None when there is none. A file that does not parse is a
    ConfigError naming it (it is ours: only a bug or a hand edit gets it there)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the servers file: {exc.strerror}"]) from exc
    try:
        return msgspec.json.decode(raw, type=Servers)
    except msgspec.ValidationError as exc:
        raise ConfigError([f"{path}: not a servers file written by `switchboard up`"]) from exc


def remove(path: Path, pid: int) -> None:
    """Remove the file if it is still the one `up` with this pid wrote."""
    with contextlib.suppress(ConfigError):
        found = read(path)
        if found is not None and found.pid == pid:
            path.unlink(missing_ok=True)


def running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def apply(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[Settings, dict[str, str]]:
    """Settings completed from the servers file when neither REDIS_URL nor DATABASE_URL is
    set (anything set in the environment still wins), with one line on stderr saying so, and
    the variables taken from the file (for a process this command execs). A file whose `up`
    is gone is one clear ConfigError line, not a connection traceback."""
    if settings.redis_url is not None or settings.database_url is not None:
        return settings, {}
    found = read(settings.servers_file)
    if found is None:
        return settings, {}
    where = settings.servers_file
    if not running(found.pid):
        raise ConfigError(
            [
                f"the servers `switchboard up` started (from {where}) are gone: its process "
                f"{found.pid} has ended. Run `switchboard up` again, or set REDIS_URL and "
                "DATABASE_URL"
            ]
        )
    base = os.environ if environ is None else environ
    taken = {k: v for k, v in found.env.items() if k in KEYS and not base.get(k, "").strip()}
    print(f"using the servers `switchboard up` started (from {where})", file=sys.stderr)  # noqa: T201
    return Settings.from_env(dict(base) | taken), taken
