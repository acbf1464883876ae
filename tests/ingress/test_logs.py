"""structlog set-up: LOG_LEVEL filters, secrets never show."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import structlog

from ingress import logs


@pytest.fixture(autouse=True)
def restore() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_log_level_filters_lower_levels(capsys: pytest.CaptureFixture[str]) -> None:
    """At `warning`, info lines are dropped and warnings are written, one JSON line each."""
    logs.configure("json", "warning")
    log = structlog.get_logger("test")
    log.info("entry.handled")
    log.warning("entry.failed", token="t0ps3cret")
    [line] = capsys.readouterr().err.splitlines()
    written = json.loads(line)
    assert written["event"] == "entry.failed" and written["level"] == "warning"
    assert written["token"] == "********"


def test_debug_shows_everything(capsys: pytest.CaptureFixture[str]) -> None:
    """At `debug`, debug lines are written too."""
    logs.configure("json", "debug")
    structlog.get_logger("test").debug("batch.handled")
    assert json.loads(capsys.readouterr().err)["event"] == "batch.handled"
