"""Runner throughput, initflow against the peers a Python team would pick (issue 7).

N runs of seven no-op steps through initflow's own runner, and the same workload
through DBOS, Procrastinate, Celery (acks_late) and arq: every step persists a
checkpoint in the database and publishes a progress message on the run's Redis
channel. Prints one table and exits 0; a peer that cannot run prints its reason.

Reproduce (from the repository root; Postgres and Redis as in the README):

    # the peers, in their own venv (never initflow's: Celery and arq pin redis<6):
    python3.11 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -r bench/requirements-peers.txt
    # initflow's venv (pip install -e .) runs this script and initflow's side:
    python bench/runner_throughput.py --quick          # 20 runs, a fast check
    python bench/runner_throughput.py                  # 200 runs, every system
    # options: --runs N, --only initflow-pg,dbos-pg,…, --peers-python PATH,
    #          --postgres-url URL (admin; a database is created per system and dropped),
    #          --redis-url URL (default: a private redis-server on a free port, so that
    #          INFO commandstats counts this benchmark alone), --json PATH

How it measures. Each system runs in its own process (bench/peers/run_*.py), in
two phases: setup (migrations, N runs submitted — projects created through
ProjectService, jobs deferred, chains sent — with no worker running), then, on the
orchestrator's GO, the worker until every run is done. Figures cover the second
phase only:

- runs/s and ms/step: from the first step entered to the last run finished (worker
  start-up and submission excluded), ms/step = that time / (7 N): the amortised
  overhead per step, at 16 concurrent runs (initflow's MAX_CONCURRENT_RUNS; every
  peer is given the same, except DBOS, whose direct starts run all N at once).
- db xacts/run: Postgres ``pg_stat_database`` xact_commit + xact_rollback deltas of
  the system's own database (read-only transactions included: every statement
  outside a transaction is one), read once no backend is connected so every
  counter is flushed. On SQLite, counted at the driver (aiosqlite for initflow,
  SQLAlchemy's commit/rollback events for DBOS). rows w/run: rows inserted, updated or
  deleted (``pg_stat_user_tables``).
- redis cmds/run: ``INFO commandstats`` call deltas (INFO itself excluded).
- CPU: the worker process's user+sys (getrusage), Postgres backends' CPU for that
  database (sampled from /proc every 50 ms, so ≈), and Redis's own (INFO cpu).
  peak MB: the worker process's max RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from harness import POSTGRES_ADMIN_URL, private_redis
from redis.asyncio import Redis

from initflow.runner.worker import MAX_CONCURRENT_RUNS

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
STEPS = 7
DEFAULT_PEERS_PYTHON = "/tmp/bench-venv/bin/python"
MARK = "@@bench"
EXCEPTION_LINE = re.compile(r"^[\w.]+(Error|Exception|Exit)\b")


@dataclass(frozen=True)
class System:
    key: str
    label: str
    script: str
    backend: str  # "postgres" | "sqlite"
    peer: bool
    redis: bool = True
    verify: str = ""  # SQL returning (runs finished, steps checkpointed)


INITFLOW_VERIFY = (
    "SELECT (SELECT count(*) FROM projects WHERE status = 'active'),"
    " (SELECT count(*) FROM initialization_steps WHERE status = 'completed')"
)
DBOS_PG_VERIFY = (
    "SELECT (SELECT count(*) FROM dbos.workflow_status WHERE status = 'SUCCESS'),"
    " (SELECT count(*) FROM dbos.operation_outputs)"
)
DBOS_SQLITE_VERIFY = (
    "SELECT (SELECT count(*) FROM workflow_status WHERE status = 'SUCCESS'),"
    " (SELECT count(*) FROM operation_outputs)"
)
CHECKPOINT_VERIFY = (
    "SELECT count(DISTINCT run_id) FILTER (WHERE position = 6), count(*) FROM bench_checkpoints"
)

SYSTEMS = (
    System("initflow-pg", "initflow · Postgres + Redis bus", "run_initflow.py", "postgres", False,
           verify=INITFLOW_VERIFY),
    System("initflow-sqlite", "initflow · SQLite, in-process bus", "run_initflow.py", "sqlite",
           False, redis=False, verify=INITFLOW_VERIFY),
    System("initflow-sqlite-redis", "initflow · SQLite + Redis bus", "run_initflow.py", "sqlite",
           False, verify=INITFLOW_VERIFY),
    System("dbos-pg", "DBOS · Postgres", "run_dbos.py", "postgres", True, verify=DBOS_PG_VERIFY),
    System("dbos-sqlite", "DBOS · SQLite", "run_dbos.py", "sqlite", True,
           verify=DBOS_SQLITE_VERIFY),
    System("procrastinate", "Procrastinate · 1 job, 7 checkpoints", "run_procrastinate.py",
           "postgres", True, verify=CHECKPOINT_VERIFY),
    System("celery", "Celery acks_late · chain of 7 tasks", "run_celery.py", "postgres", True,
           verify=CHECKPOINT_VERIFY),
    System("arq", "arq · 1 job, 7 checkpoints", "run_arq.py", "postgres", True,
           verify=CHECKPOINT_VERIFY),
)  # fmt: skip
BASELINE = "initflow-pg"


@dataclass
class Result:
    system: System
    runs: int
    error: str | None = None
    child: dict[str, Any] = field(default_factory=dict)
    ready: dict[str, Any] = field(default_factory=dict)
    db_xacts: float | None = None
    db_rollbacks: float | None = None
    rows_written: float | None = None
    redis_cmds: float | None = None
    redis_top: dict[str, int] = field(default_factory=dict)
    pg_cpu_s: float | None = None
    redis_cpu_s: float | None = None
    finished: int | None = None
    checkpoints: int | None = None

    @property
    def runs_per_s(self) -> float:
        elapsed = float(self.child.get("elapsed_s", math.nan))
        return self.runs / elapsed if elapsed > 0 else math.nan

    @property
    def ms_per_step(self) -> float:
        elapsed = float(self.child.get("elapsed_s", math.nan))
        return elapsed * 1000 / (self.runs * STEPS)


# ---------------------------------------------------------------- Postgres ----------


def pg_url(admin_url: str, database: str) -> str:
    return admin_url.rsplit("/", 1)[0] + "/" + database


class PostgresProbe:
    """Counters of one benchmark database, read from the admin database."""

    def __init__(self, admin: asyncpg.Connection, admin_url: str, database: str) -> None:
        self.admin = admin
        self.url = pg_url(admin_url, database)
        self.database = database

    async def quiesce(self, timeout: float = 60) -> tuple[int, int]:
        """Wait until no backend is connected and the counters stop moving, then read them.

        A backend flushes its statistics when it exits (an idle one may hold them
        back for up to 10 s), so this is the moment they are complete.
        """
        deadline = time.monotonic() + timeout
        while await self.admin.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1", self.database
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"backends still connected to {self.database}")
            await asyncio.sleep(0.05)
        previous = None
        while True:
            await asyncio.sleep(0.15)
            row = await self.admin.fetchrow(
                "SELECT xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
                self.database,
            )
            current = (int(row["xact_commit"]), int(row["xact_rollback"]))
            if current == previous or time.monotonic() > deadline:
                return current
            previous = current

    async def rows_written(self) -> int:
        connection = await asyncpg.connect(self.url)
        try:
            value = await connection.fetchval(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint"
                " FROM pg_stat_user_tables"
            )
        finally:
            await connection.close()
        return int(value)

    async def verify(self, sql: str) -> tuple[int, int]:
        connection = await asyncpg.connect(self.url)
        try:
            row = await connection.fetchrow(sql)
        finally:
            await connection.close()
        return int(row[0]), int(row[1])


def proc_ticks(pid: int) -> int | None:
    """utime + stime of a process, in clock ticks (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])


class BackendCpu:
    """CPU of the Postgres backends serving one database, sampled from /proc."""

    def __init__(self, admin_url: str, database: str) -> None:
        self._admin_url = admin_url
        self._database = database
        self._ticks: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._hz = os.sysconf("SC_CLK_TCK")

    async def start(self) -> None:
        connection = await asyncpg.connect(self._admin_url)
        self._task = asyncio.create_task(self._sample(connection))

    async def _sample(self, connection: asyncpg.Connection) -> None:
        try:
            while True:
                pids = await connection.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", self._database
                )
                for row in pids:
                    ticks = proc_ticks(int(row["pid"]))
                    if ticks is not None:
                        self._ticks[int(row["pid"])] = ticks
                await asyncio.sleep(0.05)
        finally:
            await connection.close()

    async def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        return sum(self._ticks.values()) / self._hz


async def create_database(admin: asyncpg.Connection, name: str) -> None:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')


async def drop_database(admin: asyncpg.Connection, name: str) -> None:
    with contextlib.suppress(Exception):
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# ------------------------------------------------------------------- Redis ----------


async def redis_counters(redis: Redis) -> tuple[dict[str, int], float]:
    stats = await redis.info("commandstats")
    calls = {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if name != "cmdstat_info"
    }
    cpu = await redis.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


# --------------------------------------------------------------- one system ---------


class Child:
    """A participant process speaking the READY / GO / DONE protocol (peers/common.py)."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    raise ChildFailed(self.reason())
                text = line.decode(errors="replace").strip()
                if text.startswith(f"{MARK} {kind} "):
                    payload: dict[str, Any] = json.loads(text.split(" ", 2)[2])
                    return payload

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(b"GO\n")

    def reason(self) -> str:
        lines = [
            line.strip()
            for line in self.log.read_text(errors="replace").splitlines()
            if line.strip() and not line.startswith(" ")
        ]
        errors = [line for line in lines if EXCEPTION_LINE.match(line)]
        last = (errors or lines or [f"exited with code {self.process.returncode}"])[-1]
        return last[:160]

    async def finish(self, timeout: float) -> None:
        """Wait for the process to exit (draining what it still prints)."""
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                await self.process.stdout.read()
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class ChildFailed(Exception):
    pass


@dataclass
class Bench:
    """What every measurement shares."""

    args: argparse.Namespace
    admin: asyncpg.Connection | None
    redis_url: str
    work_root: Path
    prefix: str


async def measure(system: System, bench: Bench) -> Result:
    args = bench.args
    result = Result(system, args.runs)
    python = args.peers_python if system.peer else sys.executable
    if not os.access(python, os.X_OK):
        result.error = f"not run: {python} not found (see the top of this file)"
        return result
    work_dir = bench.work_root / system.key
    work_dir.mkdir(parents=True)
    probe: PostgresProbe | None = None
    if system.backend == "postgres":
        assert bench.admin is not None
        database = f"bench_{system.key.replace('-', '_')}_{os.getpid()}"
        await create_database(bench.admin, database)
        probe = PostgresProbe(bench.admin, args.postgres_url, database)
        database_url = probe.url
    else:
        database_url = f"sqlite://{work_dir / 'bench.sqlite3'}"
    argv = [
        python, str(PEERS / system.script), "--runs", str(args.runs),
        "--concurrency", str(MAX_CONCURRENT_RUNS), "--database-url", database_url,
        "--redis-url", bench.redis_url if system.redis else "",
        "--prefix", f"{bench.prefix}-{system.key}", "--work-dir", str(work_dir),
    ]  # fmt: skip
    log = work_dir / "child.log"
    with log.open("wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            cwd=str(PEERS),
        )  # fmt: skip
    try:
        await exchange(Child(process, log), result, probe, bench)
        if probe is None:
            with contextlib.closing(sqlite3.connect(work_dir / "bench.sqlite3")) as db:
                row = db.execute(system.verify).fetchone()
                result.finished, result.checkpoints = int(row[0]), int(row[1])
        if result.finished != args.runs:
            result.error = f"only {result.finished} of {args.runs} runs finished"
    except ChildFailed as exc:
        result.error = f"not run: {exc}"
    except TimeoutError:
        result.error = f"not run: no answer within {args.timeout:.0f} s (log: {log})"
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if probe is not None and bench.admin is not None and not args.keep:
            await drop_database(bench.admin, probe.database)
    return result


async def exchange(child: Child, result: Result, probe: PostgresProbe | None, bench: Bench) -> None:
    """READY → read the counters → GO → DONE → process gone → read them again."""
    runs = bench.args.runs
    redis = Redis.from_url(bench.redis_url)
    sampler: BackendCpu | None = None
    try:
        result.ready = await child.expect("READY", bench.args.timeout)
        if probe is not None:
            await probe.quiesce()
            before_rows = await probe.rows_written()
            before_xacts = await probe.quiesce()
            sampler = BackendCpu(bench.args.postgres_url, probe.database)
            await sampler.start()
        before_calls, before_cpu = await redis_counters(redis)
        child.go()
        result.child = await child.expect("DONE", bench.args.timeout)
        await child.finish(60)
        after_calls, after_cpu = await redis_counters(redis)
        if probe is not None and sampler is not None:
            result.pg_cpu_s = await sampler.stop()
            after_xacts = await probe.quiesce()
            result.db_xacts = (sum(after_xacts) - sum(before_xacts)) / runs
            result.db_rollbacks = (after_xacts[1] - before_xacts[1]) / runs
            result.rows_written = (await probe.rows_written() - before_rows) / runs
            result.finished, result.checkpoints = await probe.verify(result.system.verify)
        elif "sql_transactions" in result.child:
            result.db_xacts = result.child["sql_transactions"] / runs
            result.db_rollbacks = result.child.get("sql_rollbacks", 0) / runs
        deltas = {k: v - before_calls.get(k, 0) for k, v in after_calls.items()}
        deltas = {k: v for k, v in deltas.items() if v}
        result.redis_cmds = sum(deltas.values()) / runs
        result.redis_top = dict(sorted(deltas.items(), key=lambda kv: -kv[1])[:6])
        result.redis_cpu_s = after_cpu - before_cpu
    finally:
        if sampler is not None:
            await sampler.stop()
        await redis.aclose()


# ------------------------------------------------------------------- report ---------


def fmt(value: float | None, spec: str = ".1f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(value, spec)


def report(results: list[Result], args: argparse.Namespace, redis_note: str) -> None:
    base = next((r for r in results if r.system.key == BASELINE and not r.error), None)
    print(
        f"runner throughput: {args.runs} runs x {STEPS} no-op steps; "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, {redis_note}; "
        f"load average at the end {os.getloadavg()[0]:.2f}"
    )
    header = (
        f"{'system':38} {'runs/s':>7} {'ms/step':>8} {'vs initflow':>11} {'db xacts':>9} "
        f"{'rows w':>7} {'redis':>6} {'CPU s':>6} {'pg CPU':>7} {'redis':>6} {'peak':>6}"
    )
    units = (
        f"{'':38} {'':>7} {'':>8} {'(runs/s)':>11} {'/run':>9} {'/run':>7} {'cmd/run':>6} "
        f"{'worker':>6} {'≈ s':>7} {'CPU s':>6} {'MB':>6}"
    )
    print(header)
    print(units)
    print("-" * len(header))
    for r in results:
        if r.error and not r.child:
            print(f"{r.system.label:38} {r.error}")
            continue
        ratio = fmt(r.runs_per_s / base.runs_per_s, ".2f") + "x" if base else "-"
        print(
            f"{r.system.label:38} {fmt(r.runs_per_s):>7} {fmt(r.ms_per_step, '.2f'):>8} "
            f"{ratio:>11} {fmt(r.db_xacts):>9} {fmt(r.rows_written):>7} "
            f"{fmt(r.redis_cmds):>6} {fmt(r.child.get('cpu_s'), '.2f'):>6} "
            f"{fmt(r.pg_cpu_s, '.2f'):>7} {fmt(r.redis_cpu_s, '.2f'):>6} "
            f"{fmt(r.child.get('peak_rss_mb'), '.0f'):>6}" + (f"  ! {r.error}" if r.error else "")
        )
    print()
    print("per system: steps executed (7 per run if no duplicate) · runs finished per the DB ·")
    print("            submit ms/run (setup, not timed) · rollbacks/run · top Redis commands")
    for r in results:
        if not r.child:
            continue
        submit = r.ready.get("submit_ms_per_run") or r.child.get("submit_ms_per_run")
        top = ", ".join(f"{k} {v / r.runs:.1f}" for k, v in r.redis_top.items()) or "none"
        print(
            f"  {r.system.key:22} steps {r.child.get('steps')} · finished {r.finished} · "
            f"submit {fmt(submit, '.2f')} ms"
            f" · rollbacks {fmt(r.db_rollbacks)} · redis/run: {top}"
        )
        if "sql_write_transactions" in r.child:
            print(
                f"  {'':22} driver: {r.child['sql_statements'] / r.runs:.1f} statements, "
                f"{r.child['sql_transactions'] / r.runs:.1f} transactions, "
                f"{r.child['sql_write_transactions'] / r.runs:.1f} write transactions per run "
                f"({2 * STEPS + 1} state transitions per run); asyncpg pool resets "
                f"{r.child.get('sql_pool_resets', 0) / r.runs:.1f} per run"
            )
    print()
    print(
        "runs/s: first step entered → last run finished; ms/step = that / (7 N). "
        f"Concurrency {MAX_CONCURRENT_RUNS} runs everywhere, except DBOS (all N at once).\n"
        "db xacts: commits + rollbacks in the system's own database (pg_stat_database; "
        "SQLite: counted at the driver), read-only ones included. DBOS's include its\n"
        "workflow start (one per run); the others' submission is excluded. CPU s: the "
        "worker process; pg CPU: its Postgres backends (sampled); redis: redis-server."
    )


# --------------------------------------------------------------------- main ---------


async def run(args: argparse.Namespace) -> list[Result]:
    selected = [s for s in SYSTEMS if not args.only or s.key in args.only]
    admin: asyncpg.Connection | None = None
    postgres_error: str | None = None
    try:
        admin = await asyncpg.connect(args.postgres_url)
    except (OSError, asyncpg.PostgresError) as exc:
        postgres_error = f"not run: Postgres unreachable ({exc})"
    prefix = f"bench{os.getpid()}"
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="initflow-bench-") as tmp:
        work_root = Path(tmp)
        redis_context: contextlib.AbstractAsyncContextManager[str]
        if args.redis_url:
            redis_context = contextlib.nullcontext(args.redis_url)  # type: ignore[assignment]
            redis_note = f"Redis {args.redis_url} (shared: other clients' commands count too)"
        elif shutil.which("redis-server"):
            redis_context = private_redis(work_root)
            redis_note = "private redis-server"
        else:
            redis_context = contextlib.nullcontext("redis://127.0.0.1:6379/0")  # type: ignore[assignment]
            redis_note = "Redis 127.0.0.1:6379 (shared: other clients' commands count too)"
        async with redis_context as redis_url:
            for system in selected:
                print(f"… {system.label}", file=sys.stderr, flush=True)
                if system.backend == "postgres" and admin is None:
                    results.append(Result(system, args.runs, error=postgres_error))
                    continue
                result = await measure(system, Bench(args, admin, redis_url, work_root, prefix))
                results.append(result)
                if result.error:
                    print(f"  {result.error}", file=sys.stderr, flush=True)
    if admin is not None:
        await admin.close()
    report(results, args, redis_note)
    return results


def _plain(result: Result) -> dict[str, Any]:
    fields = {k: v for k, v in vars(result).items() if k != "system"}
    return fields | {"runs_per_s": result.runs_per_s, "ms_per_step": result.ms_per_step}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 runs: a fast check")
    parser.add_argument(
        "--only",
        type=lambda s: [k.strip() for k in s.split(",") if k.strip()],
        default=[],
        help="comma-separated: " + ",".join(s.key for s in SYSTEMS),
    )
    parser.add_argument(
        "--peers-python",
        default=os.environ.get("BENCH_PEERS_PYTHON", DEFAULT_PEERS_PYTHON),
        help="the python of the peers' venv (bench/requirements-peers.txt)",
    )
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--redis-url", default="", help="default: a private redis-server")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per phase")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    parser.add_argument("--json", default="", help="also write raw results here")
    args = parser.parse_args()
    if args.quick:
        args.runs = 20
    unknown = set(args.only) - {s.key for s in SYSTEMS}
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    results = asyncio.run(run(args))
    if args.json:
        Path(args.json).write_text(
            json.dumps([{"system": r.system.key, **_plain(r)} for r in results], indent=2)
        )


if __name__ == "__main__":
    main()
