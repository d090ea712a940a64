"""One source of "now": timezone-aware UTC, truncated to microseconds."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
