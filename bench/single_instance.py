"""Single-instance figures for issue #2 (SQLite, in-process bus). Prints a table; never asserts.

    python bench/single_instance.py [--runs 30] [--projects 10000]

1. createProject → ACTIVE over the real HTTP + WebSocket API, step delay 0.
2. Database commits per run and per step transition (counted at the SQLite client).
3. projectStatus latency over HTTP with N projects in the database.
4. Time from process start to the resumed step after a SIGKILL mid-step.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web
from harness import free_port
from tortoise.backends.sqlite import client as sqlite_client

from initflow.app import create_app
from initflow.client.api import ApiClient
from initflow.clock import utcnow
from initflow.models import InitializationStep, Project, User
from initflow.services.auth import create_user
from initflow.settings import Settings, without_configuration
from initflow.step_plan import STEP_PLAN

WATCH = """subscription($id: ID!) { initProgress(projectId: $id) { seq type } }"""
CREATE = """mutation($i: CreateProjectInput!) { createProject(input: $i) { project { id } } }"""
STATUS = """query($id: ID!) {
  projectStatus(projectId: $id) { status progress seq steps { name status } }
}"""


class CommitCounter:
    """Counts commits: explicit transactions plus autocommit writes."""

    def __init__(self) -> None:
        self.commits = 0
        wrapper = sqlite_client.SqliteTransactionWrapper
        original_commit = wrapper.commit
        original_query = sqlite_client.SqliteClient.execute_query
        original_insert = sqlite_client.SqliteClient.execute_insert
        counter = self

        async def commit(self: Any) -> None:
            counter.commits += 1
            await original_commit(self)

        async def execute_query(self: Any, query: str, values: Any = None) -> Any:
            if type(self) is sqlite_client.SqliteClient and query.lstrip()[:6].upper() in (
                "UPDATE",
                "INSERT",
                "DELETE",
            ):
                counter.commits += 1
            return await original_query(self, query, values)

        async def execute_insert(self: Any, query: str, values: Any) -> Any:
            if type(self) is sqlite_client.SqliteClient:
                counter.commits += 1
            return await original_insert(self, query, values)

        wrapper.commit = commit  # type: ignore[method-assign]
        sqlite_client.SqliteClient.execute_query = execute_query  # type: ignore[method-assign]
        sqlite_client.SqliteClient.execute_insert = execute_insert  # type: ignore[method-assign]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def in_process(runs: int, projects: int, data_dir: Path) -> dict[str, Any]:
    counter = CommitCounter()
    port = free_port()
    settings = Settings(
        data_dir=data_dir, port=port, instance_id="bench", poll_interval_seconds=0.5
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        user, token = await create_user("bench")
        api = ApiClient(settings.base_url, token)
        durations: list[float] = []
        commits_per_run: list[int] = []
        for index in range(runs):
            before = counter.commits
            started = time.perf_counter()
            data = await api.execute(
                CREATE, {"i": {"name": f"bench {index}", "template": "python-service"}}
            )
            project_id = data["createProject"]["project"]["id"]
            async for _ in api.subscribe(WATCH, {"id": project_id}):
                pass
            durations.append((time.perf_counter() - started) * 1000)
            commits_per_run.append(counter.commits - before)
        await seed_projects(user, projects)
        ids = await Project.filter(owner_id=user.id).limit(500).values_list("id", flat=True)
        latencies: list[float] = []
        for project_id in ids:
            started = time.perf_counter()
            await api.execute(STATUS, {"id": str(project_id)})
            latencies.append((time.perf_counter() - started) * 1000)
        return {
            "create_to_active_ms": durations,
            "commits_per_run": commits_per_run,
            "status_ms": latencies,
            "projects_in_db": await Project.all().count(),
        }
    finally:
        await runner.cleanup()


async def seed_projects(owner: User, count: int) -> None:
    """Bulk-insert finished projects so the status query runs against a realistic table."""
    now = utcnow()
    batch = 1000
    for start in range(0, count, batch):
        rows = [
            Project(
                id=uuid.uuid4(),
                owner_id=owner.id,
                name=f"seeded {n}",
                slug=f"seeded-{n}",
                template="python-service",
                status="active",
                progress=100,
                created_at=now,
                updated_at=now,
            )
            for n in range(start, min(count, start + batch))
        ]
        await Project.bulk_create(rows)
        await InitializationStep.bulk_create(
            [
                InitializationStep(
                    project_id=p.id,
                    name=s.name,
                    position=i,
                    status="completed",
                    progress=100,
                    updated_at=now,
                )
                for p in rows
                for i, s in enumerate(STEP_PLAN)
            ]
        )


def resume_after_sigkill(samples: int) -> list[float]:
    """Start serve with a crash point, let it die, restart, time start → resumed step."""
    results: list[float] = []
    for sample in range(samples):
        with tempfile.TemporaryDirectory() as tmp:
            env = {
                **without_configuration(os.environ),
                "INITFLOW_DATA_DIR": tmp,
                "INITFLOW_STEP_DELAY_SECONDS": "0.2",
            }
            token = (
                subprocess.run(
                    [sys.executable, "-m", "initflow.cli", "users", "create", "u"],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            port = free_port()
            argv = [sys.executable, "-m", "initflow.cli", "serve", "--port", str(port)]
            crashing = subprocess.Popen(
                argv,
                env={**env, "INITFLOW_CRASH_AT": "push_template:mid"},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_ready(port)
            asyncio.run(
                ApiClient(f"http://127.0.0.1:{port}", token).execute(
                    CREATE, {"i": {"name": f"resume {sample}", "template": "static-site"}}
                )
            )
            crashing.wait(timeout=60)
            db = sqlite3.connect(Path(tmp) / "initflow.sqlite3")
            last_seq = db.execute("SELECT last_seq FROM projects").fetchone()[0]
            started = time.perf_counter()
            restarted = subprocess.Popen(
                argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                while db.execute("SELECT last_seq FROM projects").fetchone()[0] == last_seq:
                    if time.perf_counter() - started > 30:
                        raise TimeoutError("run did not resume")
                    time.sleep(0.002)
                results.append((time.perf_counter() - started) * 1000)
            finally:
                restarted.send_signal(signal.SIGTERM)
                restarted.wait(timeout=30)
                db.close()
    return results


def wait_ready(port: int) -> None:
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("service did not become ready")


def row(label: str, values: list[float], q: float) -> None:
    p50, tail, top = statistics.median(values), pct(values, q), max(values)
    print(f"{label:58} {p50:9.1f} {tail:9.1f} {top:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--projects", type=int, default=10_000)
    parser.add_argument("--resume-samples", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        figures = asyncio.run(in_process(args.runs, args.projects, Path(tmp)))
    resume = resume_after_sigkill(args.resume_samples)
    transitions = 2 * len(STEP_PLAN) + 1
    commits = statistics.median(figures["commits_per_run"])
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, SQLite (WAL)")
    print(f"{'measure':58} {'p50':>9} {'p95/p99':>9} {'max':>9}")
    d = figures["create_to_active_ms"]
    row(f"createProject -> ACTIVE, delay 0 (ms, n={len(d)})", d, 0.95)
    s = figures["status_ms"]
    row(f"projectStatus over HTTP, {figures['projects_in_db']} projects (ms, n={len(s)})", s, 0.99)
    row(f"start -> resumed step after SIGKILL (ms, n={len(resume)})", resume, 0.95)
    print(
        f"commits per run (median): {commits:.0f} for {transitions} state transitions "
        f"= {commits / transitions:.2f} commits per transition (includes claim, effects, release)"
    )


if __name__ == "__main__":
    main()
