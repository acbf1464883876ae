"""compose.yaml and the Dockerfile, checked by reading (no Docker engine here)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest

from consumers.cli import _parser

ROOT = Path(__file__).resolve().parent.parent
COMPOSE: dict[str, Any] = msgspec.yaml.decode((ROOT / "compose.yaml").read_bytes())
SERVICES: dict[str, Any] = COMPOSE["services"]
DOCUMENTED_ENV = {
    "REDIS_URL", "DATABASE_URL", "CHATWOOT_BASE_URL", "CHATWOOT_API_TOKEN",
    "CHATWOOT_USER_TOKEN", "CHATWOOT_BOT_ID", "CHATWOOT_WEBHOOK_SECRETS", "OUTBOUND_TOKEN",
    "OPS_TOKEN", "SWITCHBOARD_STREAMS", "MAX_BODY_BYTES", "HOST", "PORT", "LOG_FORMAT",
    "ALLOW_UNSIGNED_WEBHOOKS", "SWITCHBOARD_HOME",
}  # fmt: skip
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SPOOL_HOME = "/var/lib/switchboard"


def switchboard_services() -> list[str]:
    return [name for name, s in SERVICES.items() if s.get("build")]


def one_shot(name: str) -> bool:
    return bool(SERVICES[name].get("restart") == "no")


def subcommands() -> set[str]:
    actions = _parser()._subparsers._group_actions  # type: ignore[union-attr]
    return {name for action in actions for name in getattr(action, "choices", {})}


@pytest.mark.parametrize("name", switchboard_services())
def test_every_command_exists(name: str) -> None:
    """Each Switchboard service runs a real `switchboard` subcommand with valid arguments."""
    command = SERVICES[name]["command"]
    assert command[0] == "switchboard"
    if command[1] == "migrate" and "migrate" not in subcommands():
        pytest.skip("`switchboard migrate` arrives with the migrations branch")
    _parser().parse_args(command[1:])  # exits (fails the test) on an unknown command


@pytest.mark.parametrize("name", [name for name in SERVICES if not one_shot(name)])
def test_every_service_has_a_healthcheck(name: str) -> None:
    """Every long-running service says how to tell it is healthy."""
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", switchboard_services())
def test_services_wait_for_healthy_dependencies(name: str) -> None:
    """Switchboard starts only once its stores answer (and the schema is migrated)."""
    for dependency, wait in SERVICES[name]["depends_on"].items():
        expected = "service_completed_successfully" if one_shot(dependency) else "service_healthy"
        assert wait["condition"] == expected, dependency


@pytest.mark.parametrize("name", switchboard_services())
def test_environment_uses_only_documented_variables(name: str) -> None:
    """The compose file sets only the variables Settings reads."""
    assert set(SERVICES[name]["environment"]) <= DOCUMENTED_ENV


def test_redis_keeps_an_append_only_file() -> None:
    """Redis runs with AOF, so an acknowledged webhook survives a Redis restart."""
    assert "--appendonly" in SERVICES["redis"]["command"]


def test_consumers_start_after_a_successful_migrate() -> None:
    """`switchboard migrate` runs once, from the same image and environment, and the consumers
    start only once it has succeeded; PostgreSQL's init dir applies no schema of its own."""
    migrate = SERVICES["migrate"]
    assert migrate["command"] == ["switchboard", "migrate"]
    assert migrate["build"] == SERVICES["consumers"]["build"]
    assert migrate["environment"] == SERVICES["consumers"]["environment"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    wait = SERVICES["consumers"]["depends_on"]["migrate"]
    assert wait["condition"] == "service_completed_successfully"
    mounts = SERVICES["postgres"].get("volumes", [])
    assert not [m for m in mounts if "docker-entrypoint-initdb.d" in m]


def test_the_image_gives_its_user_a_spool_volume() -> None:
    """SWITCHBOARD_HOME is a volume owned by the user the process runs as (a root-owned home
    turned every Redis outage into 503s), and compose mounts a named volume there."""
    assert re.search(rf"^ENV [^#]*SWITCHBOARD_HOME={SPOOL_HOME}\b", DOCKERFILE, re.M | re.S)
    [user] = re.findall(r"^USER (\S+)$", DOCKERFILE, flags=re.MULTILINE)
    assert re.search(rf"chown {user}(:{user})? {SPOOL_HOME}$", DOCKERFILE, flags=re.MULTILINE)
    assert f"VOLUME {SPOOL_HOME}" in DOCKERFILE
    assert DOCKERFILE.index(f"VOLUME {SPOOL_HOME}") > DOCKERFILE.index(f"chown {user}")
    mounts = SERVICES["ingress"]["volumes"]
    [volume] = [m.split(":")[0] for m in mounts if m.split(":")[1] == SPOOL_HOME]
    assert volume in COMPOSE["volumes"]


def test_dockerfile_copies_files_that_exist() -> None:
    """Every path the Dockerfile copies is in the repository."""
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, flags=re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
