"""What a failure is (pure): the data's own fault, a passing conflict, an outage, or our bug.

Judged by what the error is — a SQLSTATE, a Redis error code, an HTTP status, a Python
exception class — never by where it was raised. The table is in docs/reliability.md.
"""

from __future__ import annotations

import enum
import traceback

from consumers.errors import HandlerError
from ingress.errors import EntryDecodeError


class Fault(enum.StrEnum):
    PERMANENT = "permanent"  # the data's own fault: dead-letter now
    TRANSIENT = "transient"  # may pass on its own: retry, counting a delivery
    OUTAGE = "outage"  # a dependency is not usable: wait in place, count nothing
    BUG = "bug"  # our own code failed on this entry: dead-letter now, with the traceback line


# -- PostgreSQL ----------------------------------------------------------------------------------

# Class 22 (data exception), 23 (integrity violation) and 54 (program limit exceeded: a value
# too long for a btree index, too many columns, a statement too complex): the values themselves
# are wrong, and no amount of waiting makes them fit.
PERMANENT_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
TRANSIENT_SQLSTATES = frozenset(
    {
        "23505",  # unique_violation: two consumers raced to insert; the retry takes the update
        "40001",  # serialization_failure
        "40P01",  # deadlock_detected
    }
)


def of_sqlstate(sqlstate: str | None) -> Fault:
    """Every SQLSTATE not the data's fault is an outage: connection (08), resources (53),
    shutdown (57P0x), statement timeout (57014), read-only after a failover (25006), lock
    not available (55P03), cached plan invalid after a migration (0A000), a table, column or
    privilege missing while a migration or a grant is under way (42P01, 42703, 42501)...
    Waiting costs an entry nothing; dead-lettering it for a server's state would lose it."""
    if sqlstate is None:
        return Fault.OUTAGE
    if sqlstate in TRANSIENT_SQLSTATES:
        return Fault.TRANSIENT
    if sqlstate[:2] in PERMANENT_SQLSTATE_CLASSES:
        return Fault.PERMANENT
    return Fault.OUTAGE


# -- Redis ---------------------------------------------------------------------------------------

# Error replies that describe the server's state, not the command: each passes on its own.
REDIS_OUTAGE_CODES = frozenset(
    {"OOM", "READONLY", "LOADING", "BUSY", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS"}
)


def of_redis_reply(code: str | None, message: str) -> Fault:
    """An error reply from Redis: `code` is the reply's first word when the client split it
    off (redis-py does for the codes it knows), else it is read from `message`. Any other
    reply (WRONGTYPE, a syntax error) is a command we should not have sent: a bug."""
    word = code or (message.split(" ", 1)[0] if message else "")
    return Fault.OUTAGE if word in REDIS_OUTAGE_CODES else Fault.BUG


# -- Chatwoot ------------------------------------------------------------------------------------

PERMANENT_HTTP = frozenset({400, 401, 403, 404, 422})


def of_http_status(status: int) -> Fault:
    """A Chatwoot answer: 408/409/425/429 and 5xx pass; the other 4xx refuse this reply."""
    if status in PERMANENT_HTTP:
        return Fault.PERMANENT
    if 400 <= status < 500 and status not in {408, 409, 425, 429}:
        return Fault.PERMANENT
    return Fault.TRANSIENT


# -- any error out of a handler ------------------------------------------------------------------


# Driver errors that say a dependency is unreachable but derive from neither ConnectionError
# nor the driver's own error root: redis-py's cluster client raises RedisClusterException (a
# plain Exception) when no node answers. Named, not imported: this module imports no driver.
OUTAGE_CLASS_NAMES = frozenset({"RedisClusterException"})


def of_error(error: BaseException) -> Fault:
    """The fault of an exception a handler raised. Our errors say what they are; a timeout
    or a lost connection is an outage; any other Python error is our bug for this entry —
    dead-lettered with its traceback line rather than retried forever."""
    if isinstance(error, EntryDecodeError):
        return Fault.PERMANENT
    if isinstance(error, HandlerError):
        if error.outage:
            return Fault.OUTAGE
        return Fault.TRANSIENT if error.retryable else Fault.PERMANENT
    if isinstance(error, TimeoutError | ConnectionError):
        return Fault.OUTAGE
    if any(cls.__name__ in OUTAGE_CLASS_NAMES for cls in type(error).__mro__):
        return Fault.OUTAGE
    return Fault.BUG


def where(error: BaseException) -> str:
    """The last line of a traceback, `File ...:line in fn` then `ExcType: message`: where our
    code failed, without frame locals (they may hold secrets or a customer's message)."""
    frames = traceback.extract_tb(error.__traceback__)
    text = f"{type(error).__name__}: {error}"
    if not frames:
        return text
    last = frames[-1]
    return f"File {last.filename}:{last.lineno} in {last.name}: {text}"
