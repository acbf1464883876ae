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
}  # fmt: skip


def switchboard_services() -> list[str]:
    return [name for name, s in SERVICES.items() if s.get("build")]


@pytest.mark.parametrize("name", switchboard_services())
def test_every_command_exists(name: str) -> None:
    """Each Switchboard service runs a real `switchboard` subcommand with valid arguments."""
    command = SERVICES[name]["command"]
    assert command[0] == "switchboard"
    _parser().parse_args(command[1:])  # exits (fails the test) on an unknown command


@pytest.mark.parametrize("name", list(SERVICES))
def test_every_service_has_a_healthcheck(name: str) -> None:
    """Every service says how to tell it is healthy."""
    assert SERVICES[name]["healthcheck"]["test"]


@pytest.mark.parametrize("name", switchboard_services())
def test_services_wait_for_healthy_dependencies(name: str) -> None:
    """Switchboard starts only once its stores answer."""
    for dependency in SERVICES[name]["depends_on"].values():
        assert dependency["condition"] == "service_healthy"


@pytest.mark.parametrize("name", switchboard_services())
def test_environment_uses_only_documented_variables(name: str) -> None:
    """The compose file sets only the variables Settings reads."""
    assert set(SERVICES[name]["environment"]) <= DOCUMENTED_ENV


def test_redis_keeps_an_append_only_file() -> None:
    """Redis runs with AOF, so an acknowledged webhook survives a Redis restart."""
    assert "--appendonly" in SERVICES["redis"]["command"]


def test_schema_is_applied_by_postgres() -> None:
    """PostgreSQL applies schema.sql from the repository on first start."""
    mounts = SERVICES["postgres"]["volumes"]
    assert "./schema.sql:/docker-entrypoint-initdb.d/10-schema.sql:ro" in mounts


def test_dockerfile_copies_files_that_exist() -> None:
    """Every path the Dockerfile copies is in the repository."""
    text = (ROOT / "Dockerfile").read_text()
    for line in re.findall(r"^COPY (.+)$", text, flags=re.MULTILINE):
        *sources, _ = line.split()
        for source in sources:
            assert (ROOT / source).exists(), source
