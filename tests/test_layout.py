"""The layout rules of design.md §2, checked on the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DRIVERS = {"redis", "asyncpg", "httpx", "starlette", "uvicorn"}
# What the consumers may use of the ingress package: the stream contract and shared plumbing,
# never the HTTP app or the publisher.
CONSUMERS_MAY_IMPORT = {
    "ingress",
    "ingress.events",
    "ingress.views",
    "ingress.topology",
    "ingress.settings",
    "ingress.logs",
    "ingress.errors",
    "ingress.connect",  # the Redis client for REDIS_URL (single server or Cluster)
}
PURE = [
    "ingress/signatures.py",
    "ingress/events.py",
    "ingress/views.py",
    "ingress/topology.py",
    "consumers/conversation.py",
    "consumers/decisions.py",
    "consumers/backoff.py",
    "consumers/faults.py",
    "consumers/statuses.py",
    "consumers/clock.py",
    "consumers/gates.py",
    "consumers/synthetic.py",
    "consumers/steps.py",
    "consumers/echoes.py",
    "consumers/timeline.py",
    "consumers/signing.py",
    "consumers/egress.py",
]
# The worker apps' client (appclient.py) and Meta's Graph API client (graph.py) are the other
# httpx adapters: neither is Chatwoot.
ONLY_IN = {
    "asyncpg": ("consumers/store/",),
    "httpx": ("consumers/chatwoot.py", "consumers/appclient.py", "consumers/graph.py"),
}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def sources(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", sources("ingress"), ids=lambda p: p.name)
def test_ingress_never_imports_consumers(path: Path) -> None:
    """The ingress runs without the consumers installed or importable."""
    assert not {i for i in imports(path) if i.split(".")[0] == "consumers"}


@pytest.mark.parametrize("path", sources("consumers"), ids=lambda p: p.name)
def test_consumers_import_only_the_contract_from_ingress(path: Path) -> None:
    """Consumers use the stream contract and plumbing of ingress, not its app or publisher."""
    used = {i for i in imports(path) if i.split(".")[0] == "ingress"}
    modules = {
        i for i in used if i.count(".") <= 1 and (ROOT / f"{i.replace('.', '/')}.py").exists()
    }
    assert modules <= CONSUMERS_MAY_IMPORT


@pytest.mark.parametrize("name", PURE)
def test_pure_modules_import_no_driver(name: str) -> None:
    """The pure core touches no network or database."""
    assert not {i.split(".")[0] for i in imports(ROOT / name)} & DRIVERS


@pytest.mark.parametrize(("driver", "owner"), ONLY_IN.items())
def test_one_adapter_per_driver(driver: str, owner: tuple[str, ...]) -> None:
    """Only the store package imports asyncpg and only the API clients (chatwoot.py,
    appclient.py, graph.py) import httpx (tests and scripts aside)."""
    users = [
        str(p.relative_to(ROOT))
        for package in ("ingress", "consumers")
        for p in sources(package)
        if driver in {i.split(".")[0] for i in imports(p)}
    ]
    assert users and all(user.startswith(owner) for user in users), users


def test_top_level_is_the_design_card() -> None:
    """The repository's top level holds what the design card fixes."""
    for name in ("ingress", "consumers", "tests", "scripts"):
        assert (ROOT / name).is_dir(), name
    for name in (
        "schema.sql",
        "streams.yaml",
        "Dockerfile",
        "compose.yaml",
        "pyproject.toml",
        "README.md",
    ):
        assert (ROOT / name).is_file(), name
