"""Time, passed in rather than patched: the default clocks the workers use."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
