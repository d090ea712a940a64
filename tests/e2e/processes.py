"""Real ``initflow`` child processes, their data dir's SQLite file, and git.

Synchronisation is always on a real condition with a deadline (readiness, process exit, a
database row), never a bare sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from initflow.settings import without_configuration

BIN_DIR = Path(sys.executable).parent
INITFLOW = str(BIN_DIR / "initflow") if (BIN_DIR / "initflow").exists() else "initflow"
READY_DEADLINE_SECONDS = 30.0
POLL_SECONDS = 0.02


def free_port() -> int:
    """A port the kernel just handed out (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_environment(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = without_configuration(os.environ)  # nothing of the developer's shell
    env["INITFLOW_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def wait_until(
    condition: Callable[[], Any], *, timeout: float, what: str, interval: float = POLL_SECONDS
) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def run_cli(data_dir: Path, *args: str, env: Mapping[str, str] | None = None) -> str:
    """Run an ``initflow`` command to completion and return its stdout."""
    return run_to_completion([INITFLOW, *args], data_dir, env)


def run_to_completion(
    argv: Sequence[str], data_dir: Path, env: Mapping[str, str] | None = None
) -> str:
    """Run a process on ``data_dir`` to completion: its stdout, or a failure with both streams."""
    result = subprocess.run(
        list(argv),
        env=child_environment(data_dir, env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)} exited {result.returncode}\n"
            f"--- stdout ---\n{result.stdout}\n--- stderr ---\n{result.stderr}"
        )
    return result.stdout


def create_user(data_dir: Path, name: str) -> str:
    """``initflow users create NAME``: the token is the last line of stdout."""
    lines = [line for line in run_cli(data_dir, "users", "create", name).splitlines() if line]
    return lines[-1].strip()


@dataclass(frozen=True)
class UserDataDir:
    """A data dir whose database holds one user made by ``initflow users create``."""

    path: Path
    user: str
    token: str


def database_path(data_dir: Path) -> Path:
    return data_dir / "initflow.sqlite3"


@contextlib.contextmanager
def open_db(data_dir: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived stdlib connection to the service's SQLite file (rows as dicts)."""
    connection = sqlite3.connect(database_path(data_dir), timeout=10)
    connection.row_factory = sqlite3.Row
    try:
        yield connection
    finally:
        connection.close()


def parse_db_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class ServiceProcess:
    """One ``initflow serve`` child process with captured output."""

    def __init__(
        self,
        *,
        data_dir: Path,
        log_dir: Path,
        label: str,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.label = label
        self.port = port or free_port()
        self.env = child_environment(data_dir, env)
        self.stdout_path = log_dir / f"{label}.stdout.log"
        self.stderr_path = log_dir / f"{label}.stderr.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at: datetime | None = None
        self.started_monotonic: float | None = None
        self.ready_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def start(self) -> ServiceProcess:
        assert self.process is None, "a ServiceProcess is started once"
        self.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            self.stdout_path.open("wb") as stdout,
            self.stderr_path.open("wb") as stderr,
        ):
            self.started_at = datetime.now(UTC)
            self.started_monotonic = time.monotonic()
            self.process = subprocess.Popen(
                [INITFLOW, "serve", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
            )
        return self

    def _ready(self) -> bool:
        code = self.returncode
        if code is not None:
            raise AssertionError(f"{self.label} exited with {code} before it was ready")
        try:
            with urllib.request.urlopen(f"{self.base_url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def wait_ready(self, timeout: float = READY_DEADLINE_SECONDS) -> float:
        """Block until ``/readyz`` answers 200; returns seconds since start."""
        wait_until(self._ready, timeout=timeout, what=f"{self.label} /readyz 200")
        assert self.started_monotonic is not None
        self.ready_seconds = time.monotonic() - self.started_monotonic
        return self.ready_seconds

    def wait_exit(self, timeout: float) -> int:
        """Wait for the process to end by itself (a crash point, say); returns its code."""
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.label} (pid {self.pid}) still running after {timeout:.0f} s"
            ) from None

    def terminate(self, timeout: float = 15.0) -> int:
        """Graceful stop: SIGTERM, then wait for the exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        """Teardown: make sure the process is gone (SIGKILL if it still runs)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return (
            f"===== {self.label} (port {self.port}, exit {self.returncode}) =====\n"
            f"--- stdout ({self.stdout_path}) ---\n{self.stdout()}\n"
            f"--- stderr ({self.stderr_path}) ---\n{self.stderr()}"
        )


def git(*args: str, cwd: Path | None = None) -> str:
    """Run git with the developer's config switched off; returns stripped stdout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        {"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_TERMINAL_PROMPT": "0"}
    )
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout.strip()


if shutil.which("git") is None:  # a failure, never a skip: the steps need git
    raise pytest.UsageError("git is not installed: the e2e tests need it")
requires_git = pytest.mark.needs_git


ServiceFactory = Callable[..., ServiceProcess]


# --- several instances on one Postgres + Redis ----------------------------------------------
# Added for tests/e2e/test_instances.py and tests/chaos/: signals, log lines, an async
# condition wait, and the Postgres side of "every effect exactly once".


def send_signal(service: ServiceProcess, signum: signal.Signals) -> None:
    """Deliver ``signum`` to a running service (SIGKILL, SIGTERM, SIGSTOP, SIGCONT …)."""
    assert service.process is not None
    if service.process.poll() is None:
        service.process.send_signal(signum)


def log_lines(service: ServiceProcess, *needles: str) -> list[str]:
    """The service's stderr lines containing every one of ``needles``."""
    return [line for line in service.stderr().splitlines() if all(n in line for n in needles)]


async def wait_for(
    condition: Callable[[], Awaitable[Any]],
    *,
    timeout: float,
    what: str,
    interval: float = 0.05,
) -> Any:
    """Await ``condition`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = await condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")
        await asyncio.sleep(interval)


def cli_user_token(data_dir: Path, name: str, env: Mapping[str, str]) -> str:
    """``initflow users create NAME`` against the database in ``env``; the printed token."""
    output = run_cli(data_dir, "users", "create", name, env=env)
    return [line for line in output.splitlines() if line.strip()][-1].strip()


@contextlib.asynccontextmanager
async def pg_connection(url: str) -> AsyncIterator[Any]:
    """One asyncpg connection for the test's own reads (never the service's pool)."""
    connection = await asyncpg.connect(url, timeout=10)
    try:
        yield connection
    finally:
        await connection.close()


async def pg_project(connection: Any, project_id: str) -> dict[str, Any]:
    row = await connection.fetchrow(
        "SELECT status, progress, last_seq, lease_owner, lease_token, lease_expires_at,"
        " updated_at FROM projects WHERE id = $1",
        uuid.UUID(project_id),
    )
    assert row is not None, f"project {project_id} not in the database"
    return dict(row)


async def pg_steps(connection: Any, project_id: str) -> dict[str, dict[str, Any]]:
    """Step name -> its initialization_steps row (status, attempts, completed_at …)."""
    rows = await connection.fetch(
        "SELECT name, status, attempts, progress, started_at, completed_at, checkpoint"
        " FROM initialization_steps WHERE project_id = $1 ORDER BY position",
        uuid.UUID(project_id),
    )
    return {row["name"]: dict(row) for row in rows}


async def pg_events(connection: Any, project_id: str) -> list[dict[str, Any]]:
    """The project's progress_events in seq order; ``step`` is read from the payload."""
    rows = await connection.fetch(
        "SELECT seq, type, payload, created_at FROM progress_events"
        " WHERE project_id = $1 ORDER BY seq",
        uuid.UUID(project_id),
    )
    events = []
    for row in rows:
        payload = row["payload"]
        payload = json.loads(payload) if isinstance(payload, str) else payload
        events.append(
            {
                "seq": row["seq"],
                "type": row["type"],
                "step": payload.get("step"),
                "created_at": row["created_at"],
                "payload": payload,
            }
        )
    return events


async def pg_count(connection: Any, table: str, project_id: str, where: str = "") -> int:
    sql = f"SELECT count(*) FROM {table} WHERE project_id = $1 {where}"
    return int(await connection.fetchval(sql, uuid.UUID(project_id)))


async def pg_effects(connection: Any, project_id: str) -> dict[str, Any]:
    """Every effect row of a project, for exact-once checks and before/after comparisons."""
    pid = uuid.UUID(project_id)

    async def rows(sql: str) -> list[dict[str, Any]]:
        return [dict(r) for r in await connection.fetch(sql, pid)]

    return {
        "repositories": await rows(
            "SELECT id, path, initial_commit, head_commit FROM repositories WHERE project_id = $1"
        ),
        "environments": await rows(
            "SELECT id, name, position FROM environments WHERE project_id = $1 ORDER BY position"
        ),
        "gitops": await rows(
            "SELECT id, environment, kind, path FROM gitops_resources"
            " WHERE project_id = $1 ORDER BY id"
        ),
        "audit": await rows(
            "SELECT id, action, dedupe_key FROM audit_log WHERE project_id = $1 ORDER BY id"
        ),
        "members": await rows(
            "SELECT id, user_id, role FROM project_members WHERE project_id = $1 ORDER BY id"
        ),
        "webhooks": await rows(
            "SELECT id, idempotency_key, event FROM webhook_deliveries"
            " WHERE project_id = $1 ORDER BY id"
        ),
    }


def repository_refs(bare: str) -> str:
    """``git for-each-ref`` of a bare repository: every ref and where it points."""
    return git("-C", bare, "for-each-ref", "--format=%(refname) %(objectname)")


async def assert_pg_initialized_exactly_once(
    connection: Any,
    data_dir: Path,
    project_id: str,
    before: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    environments: tuple[str, ...] = ("development", "staging", "production"),
) -> dict[str, Any]:
    """Active at 100 %, every step completed, every effect once (Postgres + the git repo).

    Always: each start of a step is one STEP_STARTED event and one attempt, and no step
    starts again once it completed. ``before`` is step rows read at an interruption
    (``None``: the run was never interrupted, so every step ran once): a step completed
    then keeps its completion and its single attempt; a step running then ran exactly
    once more; a pending one ran once; a step left out is not checked further. Returns
    the effects (see ``pg_effects``).
    """
    project = await pg_project(connection, project_id)
    assert (project["status"], project["progress"], project["lease_owner"]) == (
        "active",
        100,
        None,
    ), project
    steps = await pg_steps(connection, project_id)
    events = await pg_events(connection, project_id)
    starts: dict[str, int] = {name: 0 for name in steps}
    completed: set[str] = set()
    for event in events:
        if event["type"] == "STEP_STARTED":
            assert event["step"] not in completed, ("started again after completing", event)
            starts[event["step"]] += 1
        elif event["type"] == "STEP_COMPLETED":
            completed.add(event["step"])
    for name, row in steps.items():
        assert row["status"] == "completed", (name, row)
        assert starts[name] == row["attempts"], (name, starts[name], row)
        previous = before.get(name, {"status": "unknown"}) if before is not None else None
        if previous is None or previous["status"] == "pending":
            assert row["attempts"] == 1, (name, row)
        elif previous["status"] == "unknown":
            assert row["attempts"] >= 1, (name, row)
        elif previous["status"] == "completed":
            assert row["completed_at"] == previous["completed_at"], (name, previous, row)
            assert row["attempts"] == 1, (name, row)
        else:
            assert previous["status"] == "running", (name, previous)
            assert row["attempts"] == previous["attempts"] + 1, (name, previous, row)

    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert project["last_seq"] == len(seqs), (project, len(seqs))
    types = [e["type"] for e in events]
    assert types.count("INITIALIZATION_COMPLETED") == 1, types
    assert types[-1] == "INITIALIZATION_COMPLETED", types

    effects = await pg_effects(connection, project_id)
    assert [e["name"] for e in effects["environments"]] == list(environments), effects
    assert len(effects["gitops"]) == 2 * len(environments), effects["gitops"]
    actions = sorted(a["action"] for a in effects["audit"])
    assert actions.count("project.initialized") == 1, actions
    assert len(effects["members"]) == 1, effects["members"]
    keys = [w["idempotency_key"] for w in effects["webhooks"]]
    assert len(keys) == len(set(keys)), keys
    assert len(effects["repositories"]) == 1, effects["repositories"]
    repository = effects["repositories"][0]
    bare = repository["path"]
    assert Path(bare) == data_dir / "repositories" / f"{project_id}.git", bare
    assert git("-C", bare, "rev-list", "--count", "main") == "2"
    assert git("-C", bare, "rev-parse", "main") == repository["head_commit"]
    assert git("-C", bare, "rev-parse", "main~1") == repository["initial_commit"]
    return effects
