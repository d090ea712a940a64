"""Fixtures for end-to-end tests: real ``initflow`` processes on real ports and data dirs.

``service_factory`` starts ``initflow serve`` (see ``processes.ServiceProcess``) on a free
port with its own data dir and environment, waits for ``/readyz``, captures stdout/stderr
into files under the test's tmp dir (printed when the test fails) and kills every process
it started in teardown. Figures the tests measure are collected with ``record_figure`` and
printed in pytest's terminal summary (never asserted).
"""

from __future__ import annotations

import shutil
import statistics
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

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
