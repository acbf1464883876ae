"""The fault classes (pure): by SQLSTATE, Redis reply, HTTP status and exception kind."""

from __future__ import annotations

import pytest
from redis.exceptions import RedisClusterException

from consumers import faults
from consumers.errors import ChatwootError, Outage, PermanentError, StoreError
from consumers.faults import Fault
from ingress.errors import EntryDecodeError


@pytest.mark.parametrize(
    ("sqlstate", "fault"),
    [
        pytest.param("22P02", Fault.PERMANENT, id="invalid-text-representation"),
        pytest.param("22003", Fault.PERMANENT, id="numeric-out-of-range"),
        pytest.param("22021", Fault.PERMANENT, id="bad-encoding-nul"),
        pytest.param("23502", Fault.PERMANENT, id="not-null"),
        pytest.param("23503", Fault.PERMANENT, id="foreign-key"),
        pytest.param("23514", Fault.PERMANENT, id="check"),
        pytest.param("54000", Fault.PERMANENT, id="index-row-too-large"),
        pytest.param("54001", Fault.PERMANENT, id="statement-too-complex"),
        pytest.param("23505", Fault.TRANSIENT, id="unique-race"),
        pytest.param("40001", Fault.TRANSIENT, id="serialization"),
        pytest.param("40P01", Fault.TRANSIENT, id="deadlock"),
        pytest.param("08006", Fault.OUTAGE, id="connection-failure"),
        pytest.param("08001", Fault.OUTAGE, id="cannot-connect"),
        pytest.param("53300", Fault.OUTAGE, id="too-many-connections"),
        pytest.param("53100", Fault.OUTAGE, id="disk-full"),
        pytest.param("53200", Fault.OUTAGE, id="out-of-memory"),
        pytest.param("57P01", Fault.OUTAGE, id="admin-shutdown"),
        pytest.param("57P02", Fault.OUTAGE, id="crash-shutdown"),
        pytest.param("57P03", Fault.OUTAGE, id="cannot-connect-now"),
        pytest.param("57014", Fault.OUTAGE, id="statement-timeout"),
        pytest.param("25006", Fault.OUTAGE, id="read-only-after-failover"),
        pytest.param("55P03", Fault.OUTAGE, id="lock-not-available"),
        pytest.param("0A000", Fault.OUTAGE, id="cached-plan-invalid"),
        pytest.param("42P01", Fault.OUTAGE, id="missing-table"),
        pytest.param("42703", Fault.OUTAGE, id="missing-column"),
        pytest.param("42501", Fault.OUTAGE, id="missing-privilege"),
        pytest.param("XX000", Fault.OUTAGE, id="internal-error"),
        pytest.param(None, Fault.OUTAGE, id="no-sqlstate"),
    ],
)
def test_sqlstates(sqlstate: str | None, fault: Fault) -> None:
    """Classes 22, 23 and 54 are the data's fault; races retry; anything else is waited out."""
    assert faults.of_sqlstate(sqlstate) is fault


@pytest.mark.parametrize(
    ("code", "message", "fault"),
    [
        pytest.param("OOM", "command not allowed when used memory > 'maxmemory'.", Fault.OUTAGE),
        pytest.param("READONLY", "You can't write against a read only replica.", Fault.OUTAGE),
        pytest.param("LOADING", "Redis is loading the dataset in memory", Fault.OUTAGE),
        pytest.param(None, "BUSY Redis is busy running a script.", Fault.OUTAGE, id="busy"),
        pytest.param(None, "MASTERDOWN Link with MASTER is down", Fault.OUTAGE, id="masterdown"),
        pytest.param(None, "CLUSTERDOWN The cluster is down", Fault.OUTAGE, id="clusterdown"),
        pytest.param("TRYAGAIN", "Multiple keys request during rehashing", Fault.OUTAGE),
        pytest.param(None, "NOREPLICAS Not enough good replicas", Fault.OUTAGE, id="noreplicas"),
        pytest.param(None, "WRONGTYPE Operation against a key", Fault.BUG, id="wrongtype"),
        pytest.param(None, "BUSYGROUP Consumer Group name already exists", Fault.BUG, id="bg"),
        pytest.param(None, "", Fault.BUG, id="empty"),
    ],
)
def test_redis_replies(code: str | None, message: str, fault: Fault) -> None:
    """Replies about the server's state are outages; a command we should not have sent is a bug."""
    assert faults.of_redis_reply(code, message) is fault


@pytest.mark.parametrize(
    ("status", "fault"),
    [
        *(pytest.param(s, Fault.PERMANENT, id=str(s)) for s in (400, 401, 403, 404, 410, 422)),
        *(pytest.param(s, Fault.TRANSIENT, id=str(s)) for s in (408, 409, 425, 429)),
        *(pytest.param(s, Fault.TRANSIENT, id=str(s)) for s in (500, 502, 503, 504)),
    ],
)
def test_http_statuses(status: int, fault: Fault) -> None:
    """Chatwoot's 408/409/425/429 and 5xx pass; other 4xx refuse the reply for good."""
    assert faults.of_http_status(status) is fault


@pytest.mark.parametrize(
    ("error", "fault"),
    [
        pytest.param(EntryDecodeError("x"), Fault.PERMANENT, id="undecodable"),
        pytest.param(PermanentError("x"), Fault.PERMANENT, id="permanent"),
        pytest.param(StoreError("x", retryable=True), Fault.TRANSIENT, id="store-race"),
        pytest.param(StoreError("x", retryable=True, outage=True), Fault.OUTAGE, id="store-down"),
        pytest.param(StoreError("x", retryable=False), Fault.PERMANENT, id="store-bad-data"),
        pytest.param(ChatwootError("x", retryable=True), Fault.TRANSIENT, id="chatwoot-5xx"),
        pytest.param(ChatwootError("x", retryable=False), Fault.PERMANENT, id="chatwoot-404"),
        pytest.param(Outage("x"), Fault.OUTAGE, id="redis-down"),
        pytest.param(TimeoutError(), Fault.OUTAGE, id="timeout"),
        pytest.param(ConnectionRefusedError(), Fault.OUTAGE, id="refused"),
        pytest.param(RedisClusterException("x"), Fault.OUTAGE, id="cluster-unreachable"),
        pytest.param(OSError(75, "Value too large"), Fault.BUG, id="fromtimestamp-oserror"),
        pytest.param(OverflowError("x"), Fault.BUG, id="overflow"),
        pytest.param(ValueError("x"), Fault.BUG, id="value-error"),
        pytest.param(KeyError("x"), Fault.BUG, id="key-error"),
        pytest.param(AssertionError(), Fault.BUG, id="assertion"),
    ],
)
def test_errors(error: BaseException, fault: Fault) -> None:
    """Our errors say what they are; lost connections wait; any other Python error is a bug."""
    assert faults.of_error(error) is fault


def test_where_names_the_line_without_locals() -> None:
    """The traceback's last line: file, line, function, then the error; no frame locals."""
    secret = "token-123"
    try:
        {"a": secret}["missing"]
    except KeyError as exc:
        line = faults.where(exc)
    assert line.startswith("File ") and "test_faults.py:" in line
    assert line.endswith("in test_where_names_the_line_without_locals: KeyError: 'missing'")
    assert secret not in line
    assert faults.where(ValueError("never raised")) == "ValueError: never raised"
