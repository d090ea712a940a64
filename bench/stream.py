"""Stream: commit → subscriber latency and memory per subscription (issue 7).

    python bench/stream.py [--subscribers 100,1000,10000] [--quick] [--load-processes 4]
                           [--projects 10] [--step-delay 1] [--setup-timeout 60]
                           [--run-timeout 60] [--postgres-url URL] [--redis-url URL]
                           [--json PATH]

For each N (default 100, 1,000 and 10,000), on a fresh Postgres database (created,
dropped after) and its own Redis prefix (INITFLOW_REDIS_PREFIX):

1. P projects (default 10, template static-site) are created in-process while no worker
   runs, so they stay pending. One user owns them; INITFLOW_WS_CONNECTIONS_PER_USER is
   raised to N + 1000 (the other server limits keep their defaults: heartbeat 30 s,
   `connection_init` within 10 s, which every client sends at once).
2. ONE real `initflow serve --no-runner` starts (the API instance); 20 warm-up
   subscriptions connect and leave; its VmRSS is read: "RSS before".
3. N WebSocket connections, each with ONE `initProgress` subscription
   (graphql-transport-ws, token in the `connection_init` payload), are opened by
   separate load-generator processes (bench/stream_load.py; default 4, at nice 10 so
   that, like clients on other machines, they do not preempt the serve instance; each
   with at most 32 handshakes in flight); subscriber i follows project i mod P. Once
   every subscriber has its SNAPSHOT (or the setup deadline passed, default 60 s: the
   row then says how many made it), VmRSS is read again: "RSS after"; KiB/sub =
   (after - before) / subscribed. Then 5 s with nothing running: the serve process's
   CPU and the database's transactions per second that the idle subscriptions cost.
4. A separate `initflow worker` starts and executes the P runs: the real seven steps,
   each paced by INITFLOW_STEP_DELAY_SECONDS (default 1 s), their starts spread over one
   run's length (next_attempt_at), so the commit rate is the same for every N and only
   the fan-out grows. Every event goes commit (Postgres) → Redis → the serve instance →
   WebSocket.
5. Each subscriber records, for every event after its SNAPSHOT, its receipt time
   (`time.time()`) minus the event's own `at`, which the writer stamps just before the
   commit: "commit → subscriber", measured with the event's own timestamp on one
   machine's clock (every process runs here), including the receiving process's own
   event-loop delay. Percentiles are over every event delivered to every subscriber. A
   plain Redis subscriber in this process measures "commit → Redis" the same way, which
   separates the writer's commit + publish from what serve and the WebSocket add;
   "Redis -> subscriber" is each delivery's receipt minus that plain subscriber's
   receipt of the same event (what serve and the WebSocket add after the commit).
   Missing / dup: per subscriber, seqs after its SNAPSHOT up to the last it received
   that never arrived / arrived twice (both should be 0); late: events of streams that
   had not completed by the run deadline (default 60 s; counted in the percentiles with
   their age then, a lower bound marked '>='). Serve CPU: user + system seconds of the
   serve process from the worker's start until every stream completed.

Prints one table and never asserts; exits 0. Load generators, serve, worker, Postgres
and Redis all share the machine's cores, so the figures move with its load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from harness import POSTGRES_ADMIN_URL, REDIS_URL, free_port, percentile
from redis.asyncio import Redis
from tortoise import Tortoise

from initflow.bus.redis import RedisBus
from initflow.db import apply_migrations, open_database
from initflow.events import decode_events
from initflow.services.auth import create_user
from initflow.services.projects import CreateProjectRequest, ProjectService
from initflow.services.templates import TemplateCatalog
from initflow.settings import without_configuration
from initflow.step_plan import STEP_PLAN

LOAD_SCRIPT = Path(__file__).with_name("stream_load.py")
DEFAULT_SIZES = (100, 1_000, 10_000)
QUICK_SIZES = (100, 1_000)
WARMUP_SUBSCRIBERS = 20
IDLE_WINDOW_SECONDS = 5.0
TEMPLATE = "static-site"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOLD_BACK = "UPDATE projects SET next_attempt_at = now() + interval '1 hour'"
STAGGER = """
WITH ranked AS (SELECT id, row_number() OVER (ORDER BY created_at) - 1 AS n FROM projects)
UPDATE projects p SET next_attempt_at = now() + ranked.n * make_interval(secs => $1)
FROM ranked WHERE p.id = ranked.id
"""
XACTS = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = $1"


@dataclass
class Figures:
    subscribers: int
    projects: int
    subscribed: int = 0
    setup_failed: int = 0
    setup_seconds: float = math.nan
    committed: int = 0
    delivered: int = 0
    missing: int = 0
    duplicated: int = 0
    late: int = 0
    lower_bounds: bool = False
    streams_not_completed: int = 0
    run_seconds: float = math.nan
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    redis_events: int = 0
    redis_p50_ms: float = math.nan
    redis_p99_ms: float = math.nan
    serve_p50_ms: float = math.nan
    serve_p99_ms: float = math.nan
    rss_before_mib: float = math.nan
    rss_after_mib: float = math.nan
    rss_peak_mib: float = math.nan
    kib_per_subscription: float = math.nan
    serve_cpu_setup_s: float = math.nan
    idle_cpu_percent: float = math.nan
    idle_db_xacts_per_s: float = math.nan
    serve_cpu_run_s: float = math.nan
    serve_sys_run_s: float = math.nan
    load_cpu_s: float = math.nan
    project_states: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    error: str | None = None


# --- small helpers ---------------------------------------------------------------------


def proc_status_kib(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(key)


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process, from ``/proc/<pid>/stat``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def child_env(extra: dict[str, str]) -> dict[str, str]:
    env = without_configuration(os.environ)  # nothing of the developer's shell
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Child:
    """One child process: stdout read line by line, stderr into a log file."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.label = label
        self.argv = argv
        self.env = env
        self.log = log_dir / f"{label}.stderr.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> Child:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        return self

    async def line_starting(self, prefix: str, timeout: float) -> str:
        """The first stdout line starting with ``prefix``; fails on exit or after ``timeout``."""
        assert self.process is not None and self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self.process.stdout.readline()
                    if not raw:
                        raise RuntimeError(f"{self.label} exited; {self.tail()}")
                    line = raw.decode(errors="replace").strip()
                    if line.startswith(prefix):
                        return line
        except TimeoutError:
            raise TimeoutError(f"{self.label}: no {prefix!r} in {timeout:.0f} s") from None

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signum)

    async def stop(self, grace: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None or self.process.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await self.process.wait()
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.process.wait()

    def tail(self, lines: int = 8) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"stderr ({self.log}): " + " | ".join(text.strip().splitlines()[-lines:])


class RedisProbe:
    """A plain Redis subscriber on every progress channel of the prefix: commit → Redis."""

    def __init__(self, url: str, prefix: str) -> None:
        self._redis: Redis = Redis.from_url(url)
        self._pattern = f"{prefix}:progress:*"
        self.latencies_ms: list[float] = []
        self.received_at: dict[tuple[str, int], float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        pubsub = self._redis.pubsub()
        await pubsub.psubscribe(self._pattern)
        self._task = asyncio.create_task(self._read(pubsub))

    async def _read(self, pubsub: Any) -> None:
        try:
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is None or message["type"] != "pmessage":
                    continue
                received = time.time()
                for event in decode_events(message["data"]):
                    self.latencies_ms.append((received - event.at.timestamp()) * 1000.0)
                    self.received_at[event.project_id, event.seq] = received
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._redis.aclose()


# --- set-up ------------------------------------------------------------------------------


async def create_database(admin: asyncpg.Connection, base_url: str, name: str) -> str:
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = base_url.rsplit("/", 1)[0] + "/" + name
    await apply_migrations(url)
    await Tortoise.close_connections()
    return url


async def seed(url: str, redis_url: str, prefix: str, count: int) -> tuple[str, list[str]]:
    """One user and ``count`` pending projects (no worker runs yet); returns token and ids."""
    database = await open_database(url, migrate=False)
    bus = RedisBus(redis_url, prefix)
    await bus.start()
    try:
        owner, token = await create_user("bench-stream")
        service = ProjectService(TemplateCatalog.builtin(), bus)
        ids = [
            str((await service.create(owner, CreateProjectRequest(f"stream {i}", TEMPLATE))).id)
            for i in range(count)
        ]
    finally:
        await bus.close()
        await database.close()
    return token, ids


async def wait_ready(serve: Child, port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            assert serve.process is not None
            if serve.process.returncode is not None:
                raise RuntimeError(f"serve exited with {serve.process.returncode}; {serve.tail()}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"serve not ready after {timeout:.0f} s; {serve.tail()}")


@dataclass
class Target:
    """The database, Redis prefix, user token and projects of one N; the serve port."""

    name: str
    url: str
    prefix: str
    token: str
    ids: list[str]
    port: int


def load_argv(
    args: argparse.Namespace,
    target: Target,
    *,
    first: int,
    count: int,
    result: Path,
    warmup: bool = False,
) -> list[str]:
    argv = [
        "nice", "-n", str(args.load_nice), sys.executable, str(LOAD_SCRIPT), "--url", f"ws://127.0.0.1:{target.port}/graphql",
        "--token", target.token, "--projects", ",".join(target.ids), "--first", str(first),
        "--count", str(count), "--concurrency", str(args.connect_concurrency),
        "--setup-deadline", str(args.setup_timeout), "--deadline", str(args.run_timeout + 60),
        "--result", str(result),
    ]  # fmt: skip
    return [*argv, "--close-after-snapshot"] if warmup else argv


def shares(total: int, parts: int) -> list[tuple[int, int]]:
    """(first, count) for each of ``parts`` load processes."""
    parts = max(1, min(parts, total))
    sizes = [total // parts + (1 if i < total % parts else 0) for i in range(parts)]
    return [(sum(sizes[:i]), size) for i, size in enumerate(sizes)]


# --- one measurement ---------------------------------------------------------------------


@dataclass
class Stage:
    """Everything started for one N, so that ``finally`` can stop it all."""

    work: Path
    children: list[Child] = field(default_factory=list)

    async def spawn(self, label: str, argv: list[str], env: dict[str, str]) -> Child:
        child = Child(label, argv, env, self.work)
        self.children.append(child)
        return await child.start()

    async def stop_all(self) -> None:
        await asyncio.gather(*(c.stop() for c in reversed(self.children)))


async def measure(
    size: int, args: argparse.Namespace, admin: asyncpg.Connection, tmp: Path
) -> Figures:
    figures = Figures(size, args.projects)
    name = f"bench_stream_{size}_{os.getpid()}"
    stage = Stage(tmp / f"n{size}")
    stage.work.mkdir()
    try:
        url = await create_database(admin, args.postgres_url, name)
        prefix = f"bench-stream-{os.getpid()}-{size}"
        token, ids = await seed(url, args.redis_url, prefix, args.projects)
        target = Target(name, url, prefix, token, ids, free_port())
        at_redis = await run_stage(figures, stage, args, admin, target)
        await count_events(figures, target, stage.work, at_redis)
    except Exception as exc:  # a benchmark reports what went wrong and goes on
        figures.error = f"{type(exc).__name__}: {exc}"
    finally:
        await stage.stop_all()
        if not args.keep:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return figures


async def run_stage(
    figures: Figures,
    stage: Stage,
    args: argparse.Namespace,
    admin: asyncpg.Connection,
    target: Target,
) -> dict[tuple[str, int], float]:
    """Runs the stage; returns when the plain Redis subscriber received each event."""
    env = child_env(
        {
            "DATABASE_URL": target.url,
            "REDIS_URL": args.redis_url,
            "INITFLOW_REDIS_PREFIX": target.prefix,
            "INITFLOW_DATA_DIR": str(stage.work / "data"),
            "INITFLOW_STEP_DELAY_SECONDS": str(args.step_delay),
            "INITFLOW_WS_CONNECTIONS_PER_USER": str(figures.subscribers + 1000),
            "INITFLOW_LOG_FORMAT": "text",
        }
    )
    serve = await stage.spawn(
        "serve",
        [sys.executable, "-m", "initflow.cli", "serve", "--no-runner", "--port", str(target.port)],
        {**env, "INITFLOW_INSTANCE_ID": "bench-serve"},
    )
    await wait_ready(serve, target.port)
    await warm_up(stage, args, target, env)
    await subscribe_all(figures, stage, args, target, env, serve_pid=serve.pid)
    await idle_window(figures, admin, target.name, serve.pid)
    loads = [c for c in stage.children if c.label.startswith("load")]
    probe = RedisProbe(args.redis_url, target.prefix)
    await probe.start()
    cpu_before = cpu_times(serve.pid)
    try:
        started = time.perf_counter()
        await run_worker(stage, args, env, target.url, loads)
        figures.run_seconds = time.perf_counter() - started
    finally:
        await probe.close()
    cpu_after = cpu_times(serve.pid)
    figures.serve_cpu_run_s = sum(cpu_after) - sum(cpu_before)
    figures.serve_sys_run_s = cpu_after[1] - cpu_before[1]
    figures.rss_peak_mib = proc_status_kib(serve.pid, "VmHWM") / 1024
    figures.redis_events = len(probe.latencies_ms)
    if probe.latencies_ms:
        figures.redis_p50_ms = statistics.median(probe.latencies_ms)
        figures.redis_p99_ms = percentile(probe.latencies_ms, 0.99)
    return probe.received_at


async def warm_up(
    stage: Stage, args: argparse.Namespace, target: Target, env: dict[str, str]
) -> None:
    """A few subscriptions that connect and leave: first-use costs stay out of KiB/sub."""
    argv = load_argv(
        args, target, first=0, count=WARMUP_SUBSCRIBERS, result=stage.work / "warmup.json",
        warmup=True,
    )  # fmt: skip
    warmup = await stage.spawn("warmup", argv, env)
    await warmup.line_starting("done", timeout=120)


async def subscribe_all(
    figures: Figures,
    stage: Stage,
    args: argparse.Namespace,
    target: Target,
    env: dict[str, str],
    *,
    serve_pid: int,
) -> None:
    """Start the load processes and wait until each has subscribed its share."""
    rss_before = proc_status_kib(serve_pid, "VmRSS")
    cpu_before = cpu_seconds(serve_pid)
    started = time.perf_counter()
    loads = []
    for i, (first, count) in enumerate(shares(figures.subscribers, args.load_processes)):
        argv = load_argv(
            args, target, first=first, count=count, result=stage.work / f"load{i}.json"
        )
        loads.append(await stage.spawn(f"load{i}", argv, env))
    ready = await asyncio.gather(
        *(c.line_starting("ready", timeout=args.setup_timeout + 60) for c in loads)
    )
    figures.setup_seconds = time.perf_counter() - started
    figures.serve_cpu_setup_s = cpu_seconds(serve_pid) - cpu_before
    figures.subscribed = sum(int(line.split()[1]) for line in ready)
    figures.setup_failed = sum(int(line.split()[2]) for line in ready)
    rss_after = proc_status_kib(serve_pid, "VmRSS")
    figures.rss_before_mib = rss_before / 1024
    figures.rss_after_mib = rss_after / 1024
    figures.kib_per_subscription = (rss_after - rss_before) / max(1, figures.subscribed)


async def idle_window(
    figures: Figures, admin: asyncpg.Connection, database: str, serve_pid: int
) -> None:
    """Serve CPU and database transactions per second while the subscriptions sit idle."""
    xacts_before = await admin.fetchval(XACTS, database)
    cpu_before = cpu_seconds(serve_pid)
    started = time.perf_counter()
    await asyncio.sleep(IDLE_WINDOW_SECONDS)
    elapsed = time.perf_counter() - started
    figures.idle_cpu_percent = 100 * (cpu_seconds(serve_pid) - cpu_before) / elapsed
    figures.idle_db_xacts_per_s = (await admin.fetchval(XACTS, database) - xacts_before) / elapsed


async def run_worker(
    stage: Stage, args: argparse.Namespace, env: dict[str, str], url: str, loads: list[Child]
) -> None:
    """Start the worker, release the runs one by one, wait until every load process reported.

    The runs are held back (``next_attempt_at``) until the worker is up, then released
    spread over one run's length, so they do not step in lock-step.
    """
    db = await asyncpg.connect(url, timeout=10)
    try:
        await db.execute(HOLD_BACK)
        worker = await stage.spawn(
            "worker",
            [sys.executable, "-m", "initflow.cli", "worker"],
            {
                **env,
                "INITFLOW_INSTANCE_ID": "bench-worker",
                "INITFLOW_POLL_INTERVAL_SECONDS": "0.1",
            },
        )
        await worker.line_starting("initflow worker", timeout=60)
        spread = args.step_delay * len(STEP_PLAN) / max(1, args.projects)
        await db.execute(STAGGER, spread)
    finally:
        await db.close()
    await finish_loads(loads, args.run_timeout)


async def finish_loads(loads: list[Child], timeout: float) -> None:
    """Wait for every load process to report; SIGTERM (they then report) after ``timeout``."""
    done = [asyncio.create_task(c.line_starting("done", timeout=timeout)) for c in loads]
    results = await asyncio.gather(*done, return_exceptions=True)
    late = [c for c, r in zip(loads, results, strict=True) if isinstance(r, BaseException)]
    for child in late:
        child.signal(signal.SIGTERM)
    await asyncio.gather(
        *(c.line_starting("done", timeout=60) for c in late), return_exceptions=True
    )


# --- counting ----------------------------------------------------------------------------


EVENT_TIMES = "SELECT project_id::text AS id, seq, payload::jsonb->>'at' AS at FROM progress_events"


async def count_events(
    figures: Figures, target: Target, work: Path, at_redis: dict[tuple[str, int], float]
) -> None:
    """Latency percentiles; delivered, missing, duplicated and late against the database.

    "Redis -> subscriber" pairs each delivery with the plain Redis subscriber's receipt
    of the same event: what the serve instance and the WebSocket add after the commit.

    An event still undelivered when its load process stopped listening (the run deadline)
    counts in the percentiles with its age at that moment, a lower bound: the row is then
    marked with ">=".
    """
    db = await asyncpg.connect(target.url, timeout=10)
    try:
        rows = await db.fetch("SELECT id::text AS id, last_seq, status FROM projects")
        stamps = await db.fetch(EVENT_TIMES)
    finally:
        await db.close()
    last_seq = {r["id"]: int(r["last_seq"]) for r in rows}
    for row in rows:
        figures.project_states[row["status"]] = figures.project_states.get(row["status"], 0) + 1
    committed_at = {
        (r["id"], int(r["seq"])): datetime.fromisoformat(r["at"]).timestamp() for r in stamps
    }
    results = await asyncio.to_thread(read_results, work)
    latencies = [v for r in results for sub in r["subscribers"] for v in sub["latencies_ms"]]
    figures.delivered = len(latencies)
    for result in results:
        for sub in result["subscribers"]:
            project = target.ids[sub["project"]]
            upto = tally_subscriber(figures, sub, last_seq[project])
            latencies.extend(
                (result["ended_at"] - committed_at[project, seq]) * 1000.0
                for seq in range(upto + 1, last_seq[project] + 1)
                if (project, seq) in committed_at
            )
    added = serve_added_ms(results, target, at_redis)
    if added:
        figures.serve_p50_ms = statistics.median(added)
        figures.serve_p99_ms = percentile(added, 0.99)
    figures.lower_bounds = figures.late > 0
    figures.committed = sum(last_seq.values())
    figures.load_cpu_s = sum(result["cpu_seconds"] for result in results)
    if latencies:
        figures.p50_ms = statistics.median(latencies)
        figures.p99_ms = percentile(latencies, 0.99)
        figures.max_ms = max(latencies)


def serve_added_ms(
    results: list[dict[str, Any]], target: Target, at_redis: dict[tuple[str, int], float]
) -> list[float]:
    added = []
    for result in results:
        for sub in result["subscribers"]:
            project = target.ids[sub["project"]]
            for seq, received in zip(sub["seqs"], sub["received_at"], strict=True):
                redis_received = at_redis.get((project, seq))
                if redis_received is not None:
                    added.append((received - redis_received) * 1000.0)
    return added


def read_results(work: Path) -> list[dict[str, Any]]:
    """The load processes' result files (``load<i>.json``; the warm-up's is not one)."""
    return [json.loads(path.read_text()) for path in sorted(work.glob("load*.json"))]


def tally_subscriber(figures: Figures, sub: dict[str, Any], last_seq: int) -> int:
    """Count one subscriber's errors, gaps and duplicates; returns the seq it got up to."""
    if sub["error"]:
        key = ":".join(sub["error"].split(":", 2)[:2])
        figures.errors[key] = figures.errors.get(key, 0) + 1
    if sub["snapshot_seq"] is None:
        return last_seq
    if not sub["completed"]:
        figures.streams_not_completed += 1
    seqs: list[int] = sub["seqs"]
    received = set(seqs)
    upto = last_seq if sub["completed"] else max(received, default=sub["snapshot_seq"])
    figures.missing += len(set(range(sub["snapshot_seq"] + 1, upto + 1)) - received)
    figures.late += last_seq - upto
    figures.duplicated += len(seqs) - len(received)
    return int(upto)


# --- report ------------------------------------------------------------------------------


def report(rows: list[Figures], args: argparse.Namespace) -> None:
    print(
        f"stream: commit -> subscriber over WebSocket; 1 `initflow serve --no-runner` + "
        f"1 `initflow worker`, Postgres + Redis; {args.load_processes} load processes; "
        f"{os.cpu_count()} cores, Python {sys.version.split()[0]}; {args.projects} runs of "
        f"{TEMPLATE}, step delay {args.step_delay:g} s"
    )
    header = (
        f"{'subs':>6} {'subscribed':>10} {'projects':>8} {'events':>8} {'missing':>7} "
        f"{'dup':>4} {'late':>6} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9} "
        f"{'RSS before':>10} {'RSS after':>9} {'KiB/sub':>8} {'serve CPU s':>11}"
    )
    print(header)
    print("-" * len(header))
    for f in rows:
        if f.error and not f.subscribed:
            print(f"{f.subscribers:>6} {'-':>10} {f.projects:>8}  not measured: {f.error}")
            continue
        p50, p99, top = (milliseconds(v, f.lower_bounds) for v in (f.p50_ms, f.p99_ms, f.max_ms))
        print(
            f"{f.subscribers:>6} {f.subscribed:>10} {f.projects:>8} {f.delivered:>8} "
            f"{f.missing:>7} {f.duplicated:>4} {f.late:>6} {p50:>9} {p99:>9} {top:>9} "
            f"{f.rss_before_mib:>8.1f}MB {f.rss_after_mib:>7.1f}MB "
            f"{f.kib_per_subscription:>8.1f} {f.serve_cpu_run_s:>11.2f}"
        )
    print()
    for f in rows:
        if not (f.error and not f.subscribed):
            print(details(f))
    print(
        "\nevents: delivered after the SNAPSHOT, all subscribers; latency = receipt time - "
        "the event's `at` (stamped just before its commit), one clock.\nlate: not delivered "
        f"by the run deadline ({args.run_timeout:g} s); they count with their age then, so "
        "'>=' marks lower bounds.\nKiB/sub: (serve VmRSS with all subscribed - VmRSS after "
        f"a {WARMUP_SUBSCRIBERS}-subscription warm-up) / subscribed. serve CPU s: while the "
        "runs execute."
    )


def milliseconds(value: float, lower_bound: bool) -> str:
    text = f"{value:.1f}" if value < 1000 else f"{value:,.0f}"
    return f">={text}" if lower_bound else text


def details(f: Figures) -> str:
    rate = f.delivered / f.run_seconds if f.run_seconds else math.nan
    per_sub_ms = 1000 * f.serve_cpu_setup_s / max(1, f.subscribed)
    pad = " " * (len(str(f.subscribers)) + 4)
    lines = [
        f"N={f.subscribers}: setup {f.subscribed} subscribed, {f.setup_failed} failed, "
        f"{f.setup_seconds:.1f} s, serve CPU {per_sub_ms:.1f} ms per subscription; idle: "
        f"serve CPU {f.idle_cpu_percent:.0f} %, {f.idle_db_xacts_per_s:.0f} db xact/s",
        f"{pad}run {f.committed} events committed, {f.delivered} delivered in "
        f"{f.run_seconds:.1f} s ({rate:,.0f} msg/s), serve CPU {f.serve_cpu_run_s:.1f} s "
        f"({f.serve_sys_run_s:.1f} s system), serve peak RSS {f.rss_peak_mib:.0f} MB; "
        f"load generators CPU {f.load_cpu_s:.1f} s",
        f"{pad}commit -> Redis (plain subscriber): p50 {f.redis_p50_ms:.1f} ms, p99 "
        f"{f.redis_p99_ms:.1f} ms ({f.redis_events} events); Redis -> subscriber (serve + "
        f"WebSocket): p50 {f.serve_p50_ms:.1f} ms, p99 {f.serve_p99_ms:.1f} ms",
        f"{pad}projects {f.project_states}",
    ]
    problems = []
    if f.streams_not_completed:
        problems.append(f"streams not completed {f.streams_not_completed}")
    if f.errors:
        problems.append(f"subscriber errors {f.errors}")
    if f.error:
        problems.append(f"ERROR {f.error}")
    if problems:
        lines.append(pad + "; ".join(problems))
    return "\n".join(lines)


# --- main --------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[Figures]:
    admin = await asyncpg.connect(args.postgres_url, timeout=10)
    rows: list[Figures] = []
    try:
        with contextlib.ExitStack() as stack:
            if args.keep:
                tmp = tempfile.mkdtemp(prefix="initflow-stream-")
                print(f"work dir (kept): {tmp}", file=sys.stderr, flush=True)
            else:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="initflow-stream-"))
            for size in args.subscribers:
                print(f"… {size} subscribers", file=sys.stderr, flush=True)
                started = time.perf_counter()
                rows.append(await measure(size, args, admin, Path(tmp)))
                print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    finally:
        await admin.close()
    return rows


def sizes(raw: str) -> list[int]:
    return [int(part.replace("_", "")) for part in raw.split(",") if part.strip()]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--subscribers", type=sizes, default=list(DEFAULT_SIZES))
    parser.add_argument("--quick", action="store_true", help="100 and 1,000 subscribers only")
    parser.add_argument("--load-processes", type=int, default=4)
    parser.add_argument(
        "--projects", type=int, default=10, help="runs (one worker runs up to 16 at once)"
    )
    parser.add_argument("--step-delay", type=float, default=1.0, help="seconds per step")
    parser.add_argument(
        "--load-nice", type=int, default=10, help="niceness of the load generators (0: none)"
    )
    parser.add_argument("--connect-concurrency", type=int, default=32, help="per load process")
    parser.add_argument("--setup-timeout", type=float, default=60.0, help="seconds to subscribe")
    parser.add_argument("--run-timeout", type=float, default=60.0, help="seconds for the runs")
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the databases and the work dir")
    args = parser.parse_args()
    if args.quick:
        args.subscribers = list(QUICK_SIZES)
    rows: list[Figures] = []
    with contextlib.suppress(KeyboardInterrupt):
        rows = asyncio.run(run(args))
    report(rows, args)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
