"""Fixtures for end-to-end tests: real ``initflow`` processes on real ports and data dirs.

``service_factory`` starts ``initflow serve`` (see ``processes.ServiceProcess``) on a free
port with its own data dir and environment, waits for ``/readyz``, captures stdout/stderr
into files under the test's tmp dir (printed when the test fails) and kills every process
it started in teardown. Figures the tests measure are collected with ``record_figure`` and
printed in pytest's terminal summary (never asserted).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis

from .processes import ServiceFactory, ServiceProcess, UserDataDir, create_user


@pytest.fixture(scope="session")
def _alice_template(tmp_path_factory: pytest.TempPathFactory) -> UserDataDir:
    data_dir = tmp_path_factory.mktemp("template") / "data"
    return UserDataDir(data_dir, "alice", create_user(data_dir, "alice"))


@pytest.fixture
def alice_data_dir(_alice_template: UserDataDir, tmp_path: Path) -> UserDataDir:
    """A fresh data dir in the test's tmp dir with user ``alice`` and her token.

    ``initflow users create alice`` runs once per session (it is a second of start-up and
    migrations); each test gets a copy of the resulting, closed SQLite file.
    """
    data_dir = tmp_path / "data"
    shutil.copytree(_alice_template.path, data_dir)
    return UserDataDir(data_dir, _alice_template.user, _alice_template.token)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Remember each phase's report on the item, so fixtures can tell a failed test."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def service_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServiceFactory]:
    """``start(data_dir, env=None, label=None, port=None, ready=True)`` -> a started process.

    ``port`` defaults to a free one; pass the port of a dead process to restart "the same"
    service on the address its clients and its generated manifests know.
    """
    started: list[ServiceProcess] = []
    log_dir = tmp_path / "logs"

    def start(
        data_dir: Path,
        env: Mapping[str, str] | None = None,
        label: str | None = None,
        port: int | None = None,
        ready: bool = True,
    ) -> ServiceProcess:
        service = ServiceProcess(
            data_dir=data_dir,
            log_dir=log_dir,
            label=label or f"serve-{len(started) + 1}",
            env=env,
            port=port,
        )
        started.append(service)
        service.start()
        if ready:
            service.wait_ready()
        return service

    yield start

    for service in started:
        service.kill()
    call_report = getattr(request.node, "report_call", None)
    if call_report is not None and call_report.failed:
        for service in started:
            print(service.describe())


# --- figures: measured, printed in the terminal summary, never asserted --------------------

_FIGURES = pytest.StashKey[dict[str, list[tuple[str, float]]]]()


@pytest.fixture
def record_figure(request: pytest.FixtureRequest) -> Callable[[str, float], None]:
    """``record_figure(name, value)``: keep a measurement for the run's summary."""
    figures = request.config.stash.setdefault(_FIGURES, {})

    def record(name: str, value: float) -> None:
        figures.setdefault(name, []).append((request.node.name, value))
        print(f"{name}={value:.0f} ({request.node.name})")

    return record


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    figures = config.stash.get(_FIGURES, {})
    if not figures:
        return
    terminalreporter.section("e2e figures (measured, not asserted)")
    for name, samples in sorted(figures.items()):
        values = [value for _, value in samples]
        terminalreporter.write_line(
            f"{name}: n={len(values)} min={min(values):.0f} "
            f"median={statistics.median(values):.0f} max={max(values):.0f}"
        )
        for test, value in samples:
            terminalreporter.write_line(f"  {name}={value:.0f}  {test}")


# --- the machine's Postgres and Redis (several-instance tests) -----------------------------
# Missing services are an error, never a skip: CI must fail when they are gone.

E2E_POSTGRES_ADMIN_URL = os.environ.get(
    "INITFLOW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
E2E_REDIS_URL = os.environ.get("INITFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


async def _postgres_admin(*statements: str) -> None:
    connection = await asyncpg.connect(E2E_POSTGRES_ADMIN_URL, timeout=10)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The URL of a fresh, empty database on the machine's Postgres (dropped afterwards)."""
    name = f"initflow_e2e_{uuid.uuid4().hex[:12]}"
    asyncio.run(_postgres_admin(f"CREATE DATABASE {name}"))
    try:
        yield E2E_POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def redis_url() -> str:
    """The machine's Redis, checked with a PING (a missing Redis fails the test)."""

    async def ping() -> None:
        client = Redis.from_url(E2E_REDIS_URL, socket_connect_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    asyncio.run(ping())
    return E2E_REDIS_URL
