"""Crash recovery with real processes: SIGKILL at every crash point, SIGTERM mid-run, first start.

Each case runs ``initflow serve`` as a child process on a real SQLite file, lets it kill
itself at a named crash point (``INITFLOW_CRASH_AT=<step>:<point>``) while three projects
initialize, restarts it without the crash point, and checks from the database, the API and
the git repositories that every project ends ``active`` with each effect exactly once and
that no completed step ran twice.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from initflow.client.api import ApiClient
from initflow.step_plan import STEP_NAMES

from .processes import (
    ServiceFactory,
    UserDataDir,
    git,
    open_db,
    parse_db_time,
    requires_git,
    wait_until,
)

pytestmark = [pytest.mark.e2e, requires_git]

CRASH_POINTS = [
    f"{step}:{point}" for step in STEP_NAMES for point in ("started", "mid", "completed")
]
PROJECT_NAMES = ("Crash Alpha", "Crash Bravo", "Crash Charlie")
DEFAULT_ENVIRONMENTS = ("development", "staging", "production")
STEP_EVENT_TYPES = ("STEP_STARTED", "STEP_PROGRESS", "STEP_COMPLETED")
FINISH_DEADLINE_SECONDS = 60.0
CRASH_DEADLINE_SECONDS = 60.0

CREATE_PROJECT = """
mutation Create($input: CreateProjectInput!) {
  createProject(input: $input) { project { id } userErrors { field message code } }
}
"""
PROJECT_STATUS = """
query Status($id: ID!) {
  projectStatus(projectId: $id) { status progress seq steps { name status attempts } }
  project(id: $id) { repository { cloneUrl headCommit } environments { name } }
}
"""
INIT_PROGRESS = """
subscription Progress($id: ID!) {
  initProgress(projectId: $id) { seq type status { status progress } }
}
"""


# --- talking to the service ---------------------------------------------------------------


def idempotency_key(name: str) -> str:
    return "e2e-" + name.lower().replace(" ", "-")


async def create_project(client: ApiClient, name: str) -> str | None:
    """createProject with an idempotency key; None when the server died under the request."""
    variables = {
        "input": {
            "name": name,
            "template": "python-service",
            "idempotencyKey": idempotency_key(name),
        }
    }
    try:
        data = await client.execute(CREATE_PROJECT, variables)
    except (aiohttp.ClientError, ConnectionError, TimeoutError):
        return None
    payload = data["createProject"]
    assert payload["userErrors"] == [], payload
    return str(payload["project"]["id"])


async def create_projects(client: ApiClient, names: Sequence[str]) -> dict[str, str | None]:
    """Create the projects concurrently; a project whose request the crash cut off is None."""
    ids = await asyncio.gather(*(create_project(client, name) for name in names))
    return dict(zip(names, ids, strict=True))


async def follow_until_finished(client: ApiClient, project_id: str) -> dict[str, Any]:
    """Subscribe to initProgress until the server completes the stream; the last event."""
    last: dict[str, Any] | None = None
    async for data in client.subscribe(INIT_PROGRESS, {"id": project_id}):
        last = data["initProgress"]
    assert last is not None, f"initProgress({project_id}) completed without any event"
    return last


async def wait_all_finished(client: ApiClient, project_ids: Sequence[str]) -> None:
    try:
        async with asyncio.timeout(FINISH_DEADLINE_SECONDS):
            finals = await asyncio.gather(*(follow_until_finished(client, p) for p in project_ids))
    except TimeoutError:
        raise AssertionError(
            f"projects {project_ids} not finished within {FINISH_DEADLINE_SECONDS:.0f} s"
        ) from None
    for project_id, final in zip(project_ids, finals, strict=True):
        assert final["status"]["status"] == "ACTIVE", (project_id, final)


# --- reading the SQLite file directly -------------------------------------------------------


def read_steps(data_dir: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """project id -> step name -> its initialization_steps row."""
    with open_db(data_dir) as db:
        rows = db.execute(
            "SELECT project_id, name, status, attempts, completed_at FROM initialization_steps"
        ).fetchall()
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        steps.setdefault(str(row["project_id"]), {})[row["name"]] = dict(row)
    return steps


def read_events(data_dir: Path, project_id: str) -> list[dict[str, Any]]:
    with open_db(data_dir) as db:
        rows = db.execute(
            "SELECT seq, type, payload, created_at FROM progress_events "
            "WHERE project_id = ? ORDER BY seq",
            (project_id,),
        ).fetchall()
    return [
        {
            "seq": row["seq"],
            "type": row["type"],
            "step": json.loads(row["payload"]).get("step"),
            "created_at": parse_db_time(row["created_at"]),
        }
        for row in rows
    ]


def last_seqs(data_dir: Path) -> dict[str, int]:
    with open_db(data_dir) as db:
        rows = db.execute("SELECT id, last_seq FROM projects").fetchall()
    return {str(row["id"]): int(row["last_seq"]) for row in rows}


def count(data_dir: Path, sql: str, *params: Any) -> int:
    with open_db(data_dir) as db:
        return int(db.execute(sql, params).fetchone()[0])


# --- the checks -----------------------------------------------------------------------------


def assert_crash_point_was_committed(
    before: dict[str, dict[str, dict[str, Any]]], step: str, point: str
) -> None:
    """The database at the kill shows the point the process was told to die at."""
    rows = [steps[step] for steps in before.values()]
    if point == "completed":
        assert sum(r["status"] == "completed" for r in rows) == 1, rows
    elif point == "started":
        started = [r for r in rows if r["attempts"] >= 1]
        assert len(started) == 1, rows
        assert started[0]["status"] == "running", rows
    else:
        assert any(r["status"] == "running" for r in rows), rows


async def assert_initialized_exactly_once(
    data_dir: Path,
    client: ApiClient,
    project_id: str,
    before: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Active at 100 %, every step completed, every effect once; returns the API's view."""
    data = await client.execute(PROJECT_STATUS, {"id": project_id})
    status = data["projectStatus"]
    assert status["status"] == "ACTIVE", status
    assert status["progress"] == 100, status
    assert [s["name"] for s in status["steps"]] == list(STEP_NAMES)
    assert {s["status"] for s in status["steps"]} == {"COMPLETED"}, status["steps"]

    after = read_steps(data_dir)[project_id]
    events = read_events(data_dir, project_id)
    starts = {name: 0 for name in STEP_NAMES}
    for event in events:
        if event["type"] == "STEP_STARTED":
            starts[event["step"]] += 1
    for name in STEP_NAMES:
        row = after[name]
        assert row["status"] == "completed", (name, row)
        # Every start of a step is one STEP_STARTED event and one attempt.
        assert starts[name] == row["attempts"], (name, starts[name], row)
        previous = before.get(name)
        if previous is None or previous["status"] == "pending":
            assert row["attempts"] == 1, (name, row)
        elif previous["status"] == "completed":
            # A completed step never runs again: same completion, one attempt, one start.
            assert row["completed_at"] == previous["completed_at"], (name, previous, row)
            assert row["attempts"] == 1, (name, row)
        else:
            assert previous["status"] == "running", (name, previous)
            # Interrupted while running: run again exactly once.
            assert row["attempts"] == previous["attempts"] + 1, (name, previous, row)

    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1)), seqs
    assert status["seq"] == len(seqs)
    completions = [e for e in events if e["type"] == "INITIALIZATION_COMPLETED"]
    assert len(completions) == 1, [e["type"] for e in events]
    assert events[-1]["type"] == "INITIALIZATION_COMPLETED"

    with open_db(data_dir) as db:
        project = db.execute(
            "SELECT status, progress, lease_owner FROM projects WHERE id = ?", (project_id,)
        ).fetchone()
        repositories = db.execute(
            "SELECT path, initial_commit, head_commit FROM repositories WHERE project_id = ?",
            (project_id,),
        ).fetchall()
        environments = db.execute(
            "SELECT name FROM environments WHERE project_id = ? ORDER BY position", (project_id,)
        ).fetchall()
        actions = db.execute(
            "SELECT action FROM audit_log WHERE project_id = ?", (project_id,)
        ).fetchall()
    assert dict(project) == {"status": "active", "progress": 100, "lease_owner": None}
    assert [r["name"] for r in environments] == list(DEFAULT_ENVIRONMENTS)
    assert [e["name"] for e in data["project"]["environments"]] == list(DEFAULT_ENVIRONMENTS)
    assert (
        count(data_dir, "SELECT count(*) FROM gitops_resources WHERE project_id = ?", project_id)
        == 6
    )
    assert sorted(r["action"] for r in actions) == ["project.created", "project.initialized"]
    assert (
        count(data_dir, "SELECT count(*) FROM project_members WHERE project_id = ?", project_id)
        == 1
    )

    assert len(repositories) == 1, repositories
    repository = repositories[0]
    assert Path(repository["path"]) == data_dir / "repositories" / f"{project_id}.git"
    bare = repository["path"]
    assert git("-C", bare, "rev-list", "--count", "main") == "2"
    assert git("-C", bare, "rev-parse", "main") == repository["head_commit"]
    assert git("-C", bare, "rev-parse", "main~1") == repository["initial_commit"]
    assert data["project"]["repository"]["headCommit"] == repository["head_commit"]
    view: dict[str, Any] = data["project"]
    return view


def assert_clone_has_gitops(clone_url: str, token: str, head_commit: str, target: Path) -> None:
    git(
        "-c",
        f"http.extraHeader=Authorization: Bearer {token}",
        "clone",
        "-q",
        clone_url,
        str(target),
    )
    assert (target / "clusters" / "production").is_dir()
    assert git("-C", str(target), "rev-parse", "HEAD") == head_commit


def resume_latency_ms(
    data_dir: Path, service_started_at: datetime | None, seq_at_kill: dict[str, int]
) -> float | None:
    """From the restarted process's start to its first step event (projects that existed)."""
    assert service_started_at is not None
    firsts: list[datetime] = [
        event["created_at"]
        for project_id, seq in seq_at_kill.items()
        for event in read_events(data_dir, project_id)
        if event["seq"] > seq and event["type"] in STEP_EVENT_TYPES
    ]
    if not firsts:
        return None
    return (min(firsts) - service_started_at).total_seconds() * 1000


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
async def test_a_server_killed_at_any_crash_point_finishes_every_project_exactly_once_after_restart(
    crash_at: str,
    tmp_path: Path,
    alice_data_dir: UserDataDir,
    service_factory: ServiceFactory,
    record_figure: Callable[[str, float], None],
) -> None:
    step, point = crash_at.split(":")
    data_dir, token = alice_data_dir.path, alice_data_dir.token
    delay = {"INITFLOW_STEP_DELAY_SECONDS": "0.05"}

    crashing = service_factory(
        data_dir, env={**delay, "INITFLOW_CRASH_AT": crash_at}, label="crashing"
    )
    acknowledged = await create_projects(ApiClient(crashing.base_url, token), PROJECT_NAMES)
    code = await asyncio.to_thread(crashing.wait_exit, CRASH_DEADLINE_SECONDS)
    assert code == -signal.SIGKILL, f"expected death by SIGKILL, got exit code {code}"
    assert f"crash point {crash_at} reached" in crashing.stderr()

    before = read_steps(data_dir)
    seq_at_kill = last_seqs(data_dir)
    assert 1 <= len(before) <= len(PROJECT_NAMES)
    assert_crash_point_was_committed(before, step, point)
    answered = sum(project_id is not None for project_id in acknowledged.values())
    print(f"crash_at={crash_at} projects_at_kill={len(before)} answered_before_kill={answered}")

    # The same service comes back: same data dir, same address (a restart on another
    # address is the test below).
    restarted = service_factory(data_dir, env=delay, label="restarted", port=crashing.port)
    client = ApiClient(restarted.base_url, token)
    # A request the crash cut off is sent again with its idempotency key, as a client would.
    ids = {
        name: project_id or await create_project(client, name)
        for name, project_id in acknowledged.items()
    }
    assert None not in ids.values(), ids
    project_ids = [str(p) for p in ids.values()]
    assert len(set(project_ids)) == len(PROJECT_NAMES)
    assert set(before) <= set(project_ids)
    await wait_all_finished(client, project_ids)
    assert count(data_dir, "SELECT count(*) FROM projects") == len(PROJECT_NAMES)

    latency = resume_latency_ms(data_dir, restarted.started_at, seq_at_kill)
    if latency is None:
        print(f"resume_after_restart_ms=n/a ({crash_at}: nothing was left to resume)")
    else:
        record_figure("resume_after_restart_ms", latency)
    assert restarted.ready_seconds is not None
    record_figure("ready_after_restart_ms", restarted.ready_seconds * 1000)

    views = {}
    for project_id in project_ids:
        views[project_id] = await assert_initialized_exactly_once(
            data_dir, client, project_id, before.get(project_id, {})
        )
    # Clone the project the crash hit (the one that reached the crash point first).
    hit = next(
        (p for p in project_ids if before.get(p, {}).get(step, {}).get("attempts", 0) >= 1),
        project_ids[0],
    )
    repository = views[hit]["repository"]
    assert_clone_has_gitops(
        repository["cloneUrl"], token, repository["headCommit"], tmp_path / "clone"
    )


async def test_sigterm_mid_run_releases_the_lease_and_a_restart_keeps_completed_steps(
    alice_data_dir: UserDataDir, service_factory: ServiceFactory
) -> None:
    data_dir, token = alice_data_dir.path, alice_data_dir.token
    service = service_factory(
        data_dir, env={"INITFLOW_STEP_DELAY_SECONDS": "0.5"}, label="graceful"
    )
    project_id = await create_project(ApiClient(service.base_url, token), "Graceful Delta")
    assert project_id is not None

    def mid_run() -> bool:
        steps = read_steps(data_dir)[project_id]
        statuses = [steps[name]["status"] for name in STEP_NAMES]
        return "completed" in statuses and "running" in statuses

    await asyncio.to_thread(
        wait_until, mid_run, timeout=30, what="a step running after a completed one"
    )
    code = await asyncio.to_thread(service.terminate, 15)
    assert code == 0, f"graceful stop exited {code}"

    with open_db(data_dir) as db:
        lease = db.execute(
            "SELECT status, lease_owner, lease_expires_at FROM projects WHERE id = ?", (project_id,)
        ).fetchone()
    assert dict(lease) == {"status": "initializing", "lease_owner": None, "lease_expires_at": None}
    before = read_steps(data_dir)[project_id]
    assert [s for s in STEP_NAMES if before[s]["status"] == "running"], before

    restarted = service_factory(
        data_dir, env={"INITFLOW_STEP_DELAY_SECONDS": "0.05"}, label="restarted"
    )
    client = ApiClient(restarted.base_url, token)
    await wait_all_finished(client, [project_id])
    await assert_initialized_exactly_once(data_dir, client, project_id, before)


async def test_first_start_on_a_fresh_data_dir_prints_the_base_url_and_an_admin_token_last(
    tmp_path: Path, service_factory: ServiceFactory
) -> None:
    data_dir = tmp_path / "fresh"
    first = service_factory(data_dir, label="first-start")
    lines = [line.strip() for line in first.stdout().splitlines() if line.strip()]
    assert any(first.base_url in line for line in lines), lines
    token = lines[-1]
    data = await ApiClient(first.base_url, token).execute("{ viewer { name } }")
    assert data == {"viewer": {"name": "admin"}}
    assert await asyncio.to_thread(first.terminate, 15) == 0

    # The token is shown once: a later start of the same data dir prints none.
    second = service_factory(data_dir, label="second-start")
    assert token not in second.stdout()
    assert not any(line.strip().startswith("ifl_") for line in second.stdout().splitlines())


async def test_a_step_interrupted_after_its_push_converges_when_resumed_on_another_address(
    alice_data_dir: UserDataDir, service_factory: ServiceFactory
) -> None:
    data_dir, token = alice_data_dir.path, alice_data_dir.token
    crash_at = "configure_gitops:mid"
    crashing = service_factory(
        data_dir,
        env={"INITFLOW_STEP_DELAY_SECONDS": "0.05", "INITFLOW_CRASH_AT": crash_at},
        label="crashing",
    )
    project_id = await create_project(ApiClient(crashing.base_url, token), "Moved Echo")
    assert await asyncio.to_thread(crashing.wait_exit, CRASH_DEADLINE_SECONDS) == -signal.SIGKILL
    before = read_steps(data_dir)
    assert project_id is not None
    assert before[project_id]["configure_gitops"]["status"] == "running"

    moved = service_factory(data_dir, label="moved")  # another free port: another base URL
    assert moved.port != crashing.port
    client = ApiClient(moved.base_url, token)
    await wait_all_finished(client, [project_id])
    await assert_initialized_exactly_once(data_dir, client, project_id, before[project_id])
