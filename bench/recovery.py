"""Recovery after SIGKILL inside step 3, with real `initflow worker` processes (issue 7).

    python bench/recovery.py [--runs 50] [--step-delay 4] [--quick]

Postgres + Redis, the real seven steps, each paced by INITFLOW_STEP_DELAY_SECONDS so
that every run sits inside step 3 (create_environments) at the same moment. One
worker holds at most 16 runs, so ceil(N/16) "A" workers share the N runs. When the
database shows all N runs RUNNING in step 3, every A worker is SIGKILLed, then:

  (a) restart: the A workers are started again with the same INITFLOW_INSTANCE_ID,
      which may claim their own leases at once;
  (b) standby: as many "B" workers, alive since before the kill, take the runs over
      once A's leases expire — TTL 10 s (the default) and TTL 3 s
      (INITFLOW_LEASE_TTL_SECONDS). Poll interval: the default 1 s.

The runs are A's before any worker starts (lease_owner set as if A had just claimed
them; A's workers take their own leases at once), so B, started alongside A, finds
nothing to claim until A's leases expire. Worker start-up is slow on a busy machine
(seconds), which would otherwise let the runs leave step 3 before B is up.

Measured per run killed inside step 3: time from the SIGKILL to the step's next
STEP_STARTED event (progress_events.created_at, written by the worker that resumed
it); for (a) also the workers' start-up (spawn → "worker running"). Counted:
duplicate executions — STEP_STARTED events for a (run, step) beyond the one expected
(two for the killed step 3, one for every other step) and STEP_COMPLETED beyond one —
and lost runs (not ACTIVE within TTL + 8 x step delay + 60 s). Prints p50/p99/max.
Each scenario gets its own database (dropped after) and Redis prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
from harness import POSTGRES_ADMIN_URL, REDIS_URL, percentile, wait_for
from tortoise import Tortoise

from initflow.bus.redis import RedisBus
from initflow.db import apply_migrations, open_database
from initflow.runner.worker import MAX_CONCURRENT_RUNS
from initflow.services.auth import create_user
from initflow.services.projects import CreateProjectRequest, ProjectService
from initflow.services.templates import TemplateCatalog
from initflow.settings import without_configuration

STEP3 = "create_environments"
RUNNING_IN_STEP3 = """
SELECT s.project_id, p.lease_owner AS owner FROM initialization_steps s
JOIN projects p ON p.id = s.project_id WHERE s.name = $1 AND s.status = 'running'
"""
PRE_ASSIGN = """
WITH ranked AS (SELECT id, row_number() OVER (ORDER BY created_at) - 1 AS n FROM projects)
UPDATE projects p SET lease_owner = 'a' || (ranked.n / $1),
    lease_expires_at = now() + interval '1 hour'
FROM ranked WHERE p.id = ranked.id
"""
STARTED_AFTER = """
SELECT project_id, min(created_at) AS at FROM progress_events
WHERE type = 'STEP_STARTED' AND payload::jsonb->>'step' = $1 AND created_at > $2
GROUP BY project_id
"""
EVENT_COUNTS = """
SELECT project_id, payload::jsonb->>'step' AS step, type, count(*) AS n FROM progress_events
WHERE type IN ('STEP_STARTED', 'STEP_COMPLETED', 'STEP_SKIPPED')
GROUP BY 1, 2, 3
"""


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    mode: str  # "restart" | "standby"
    ttl: float


SCENARIOS = (
    Scenario("restart", "(a) restart, same instance id, TTL 10 s", "restart", 10.0),
    Scenario("standby-10", "(b) second instance alive, TTL 10 s", "standby", 10.0),
    Scenario("standby-3", "(b) second instance alive, TTL 3 s", "standby", 3.0),
)


@dataclass
class Outcome:
    scenario: Scenario
    runs: int
    killed_in_step3: int = 0
    latencies_s: list[float] = field(default_factory=list)
    startup_s: list[float] = field(default_factory=list)
    ready_at: dict[Any, datetime] = field(default_factory=dict)
    after_ready_s: list[float] = field(default_factory=list)
    duplicate_starts: int = 0
    duplicate_completions: int = 0
    lost: int = 0
    not_resumed: int = 0
    error: str | None = None


class Worker:
    """One `initflow worker` process."""

    def __init__(self, instance_id: str, env: dict[str, str], log_dir: Path) -> None:
        self.instance_id = instance_id
        self.env = {**env, "INITFLOW_INSTANCE_ID": instance_id}
        self.log = log_dir / f"{instance_id}.log"
        self.process: asyncio.subprocess.Process | None = None
        self.ready_at = datetime.now(UTC)

    async def start(self) -> float:
        """Spawn and wait for "worker … running"; returns the seconds that took."""
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "initflow.cli", "worker", env=self.env,
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    raise RuntimeError(f"worker {self.instance_id} exited; see {self.log}")
                if b"running" in line:
                    self.ready_at = datetime.now(UTC)
                    return time.perf_counter() - started

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            async with asyncio.timeout(20):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def create_projects(url: str, redis_url: str, prefix: str, runs: int) -> None:
    database = await open_database(url, migrate=False)
    bus = RedisBus(redis_url, prefix)
    await bus.start()
    try:
        owner, _ = await create_user("bench")
        projects = ProjectService(TemplateCatalog.builtin(), bus)
        for index in range(runs):
            await projects.create(owner, CreateProjectRequest(f"recovery {index}", "static-site"))
    finally:
        await bus.close()
        await database.close()


async def scenario_run(
    scenario: Scenario, args: argparse.Namespace, admin: asyncpg.Connection, work: Path
) -> Outcome:
    outcome = Outcome(scenario, args.runs)
    database = f"bench_recovery_{scenario.key.replace('-', '_')}_{os.getpid()}"
    await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{database}"')
    url = args.postgres_url.rsplit("/", 1)[0] + "/" + database
    await apply_migrations(url)
    await Tortoise.close_connections()
    prefix = f"bench-recovery-{os.getpid()}-{scenario.key}"
    data_dir = work / scenario.key
    data_dir.mkdir()
    env = {
        **without_configuration(os.environ),
        "DATABASE_URL": url,
        "REDIS_URL": args.redis_url,
        "INITFLOW_REDIS_PREFIX": prefix,
        "INITFLOW_DATA_DIR": str(data_dir),
        "INITFLOW_STEP_DELAY_SECONDS": str(args.step_delay),
        "INITFLOW_LEASE_TTL_SECONDS": str(scenario.ttl),
        "INITFLOW_LOG_FORMAT": "text",
    }
    count = math.ceil(args.runs / MAX_CONCURRENT_RUNS)
    a_workers = [Worker(f"a{i}", env, data_dir) for i in range(count)]
    b_workers = [Worker(f"b{i}", env, data_dir) for i in range(count)]
    restarted: list[Worker] = []
    db = await asyncpg.connect(url)
    try:
        await create_projects(url, args.redis_url, prefix, args.runs)
        # Every run is A's before any worker starts, as if A had just claimed it: A's
        # workers take their own leases at once, B's (started alongside) find nothing.
        await db.execute(PRE_ASSIGN, MAX_CONCURRENT_RUNS)
        standby = b_workers if scenario.mode == "standby" else []
        await asyncio.gather(*(w.start() for w in [*a_workers, *standby]))

        async def all_in_step3() -> bool:
            return len(await db.fetch(RUNNING_IN_STEP3, STEP3)) >= args.runs

        await wait_for(all_in_step3, timeout=8 * args.step_delay + 60)
        owners = {r["project_id"]: r["owner"] for r in await db.fetch(RUNNING_IN_STEP3, STEP3)}
        in_step3 = set(owners)
        killed_at = datetime.now(UTC)
        for worker in a_workers:
            worker.kill()
        for worker in a_workers:
            assert worker.process is not None
            await worker.process.wait()
        outcome.killed_in_step3 = len(in_step3)
        if scenario.mode == "restart":
            restarted = [Worker(w.instance_id, env, data_dir) for w in a_workers]
            outcome.startup_s = list(await asyncio.gather(*(w.start() for w in restarted)))
            ready_at = {w.instance_id: w.ready_at for w in restarted}
            outcome.ready_at = {p: ready_at[o] for p, o in owners.items() if o in ready_at}

        async def all_active() -> bool:
            left = await db.fetchval("SELECT count(*) FROM projects WHERE status <> 'active'")
            return int(left) == 0

        await wait_for(all_active, timeout=scenario.ttl + 8 * args.step_delay + 60, interval=0.2)
        await analyse(db, outcome, in_step3, killed_at)
    except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    finally:
        await db.close()
        for worker in a_workers:
            worker.kill()
        await asyncio.gather(*(w.stop() for w in [*a_workers, *b_workers, *restarted]))
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return outcome


async def analyse(
    db: asyncpg.Connection, outcome: Outcome, in_step3: set[Any], killed_at: datetime
) -> None:
    """Resume latencies of the runs killed in step 3, duplicates and lost runs."""
    resumed = {r["project_id"]: r["at"] for r in await db.fetch(STARTED_AFTER, STEP3, killed_at)}
    outcome.latencies_s = [
        (resumed[p] - killed_at).total_seconds() for p in in_step3 if p in resumed
    ]
    outcome.not_resumed = len(in_step3 - resumed.keys())
    outcome.after_ready_s = [
        (resumed[p] - ready).total_seconds()
        for p, ready in outcome.ready_at.items()
        if p in resumed
    ]
    for row in await db.fetch(EVENT_COUNTS):
        n = int(row["n"])
        if row["type"] == "STEP_STARTED":
            expected = 2 if row["step"] == STEP3 and row["project_id"] in in_step3 else 1
            outcome.duplicate_starts += max(0, n - expected)
        else:
            outcome.duplicate_completions += max(0, n - 1)
    outcome.lost = int(await db.fetchval("SELECT count(*) FROM projects WHERE status <> 'active'"))


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    workers = math.ceil(args.runs / MAX_CONCURRENT_RUNS)
    print(
        f"recovery: {args.runs} runs SIGKILLed inside step 3 ({STEP3}); {workers} worker(s) "
        f"killed; step delay {args.step_delay:g} s; Postgres + Redis; {os.cpu_count()} cores"
    )
    header = (
        f"{'scenario':42} {'killed':>6} {'p50 s':>7} {'p99 s':>7} {'max s':>7} "
        f"{'dup starts':>10} {'dup done':>8} {'lost':>5}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        if o.error:
            print(f"{o.scenario.label:42} not run: {o.error}")
            continue
        values = o.latencies_s
        print(
            f"{o.scenario.label:42} {o.killed_in_step3:>6} "
            f"{statistics.median(values) if values else math.nan:>7.2f} "
            f"{percentile(values, 0.99):>7.2f} {max(values, default=math.nan):>7.2f} "
            f"{o.duplicate_starts:>10} {o.duplicate_completions:>8} {o.lost:>5}"
        )
        if o.not_resumed:
            print(f"{'':42} ! {o.not_resumed} killed runs never started step 3 again")
        if o.startup_s:
            after = o.after_ready_s
            print(
                f"{'':42} worker start-up (spawn -> running): "
                f"{', '.join(f'{s:.2f}' for s in o.startup_s)} s; from its worker ready: "
                f"p50 {statistics.median(after) if after else math.nan:.2f} "
                f"p99 {percentile(after, 0.99):.2f} max {max(after, default=math.nan):.2f} s"
            )
    print(
        "\nTimes: SIGKILL → the killed step's next STEP_STARTED (p50/p99/max over the runs "
        "killed inside step 3).\ndup starts: STEP_STARTED beyond one per attempt the kill "
        "explains; dup done: STEP_COMPLETED/SKIPPED beyond one per (run, step);\nlost: "
        "runs not ACTIVE in the end."
    )


async def run(args: argparse.Namespace) -> None:
    admin = await asyncpg.connect(args.postgres_url)
    outcomes: list[Outcome] = []
    try:
        with tempfile.TemporaryDirectory(prefix="initflow-recovery-") as tmp:
            for scenario in SCENARIOS:
                if args.only and scenario.key not in args.only:
                    continue
                print(f"… {scenario.label}", file=sys.stderr, flush=True)
                outcomes.append(await scenario_run(scenario, args, admin, Path(tmp)))
    finally:
        await admin.close()
    report(outcomes, args)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=4.0, help="seconds per step")
    parser.add_argument("--quick", action="store_true", help="10 runs, 2 s steps")
    parser.add_argument(
        "--only",
        type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
        default=[],
        help="comma-separated: " + ",".join(s.key for s in SCENARIOS),
    )
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.step_delay = 10, 2.0
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
