"""The chaos tests' own Postgres cluster and Redis, and the chaos summary line.

The summary (``chaos: projects=… kills=… …``) is printed in pytest's terminal summary, so
it shows in CI output without ``-s``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .servers import PostgresCluster, RedisServer

_SUMMARY = pytest.StashKey[list[str]]()


@pytest.fixture
def chaos_report(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``chaos_report(line)``: print a line now and again in the terminal summary."""
    lines = request.config.stash.setdefault(_SUMMARY, [])

    def report(line: str) -> None:
        lines.append(line)
        print(line, flush=True)

    return report


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines = config.stash.get(_SUMMARY, [])
    if lines:
        terminalreporter.section("chaos")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def own_postgres() -> Iterator[PostgresCluster]:
    """A Postgres cluster of this test's own, started on a free port (never skipped)."""
    cluster = PostgresCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "logs")
    try:
        server.start()
        yield server
    finally:
        server.destroy()
