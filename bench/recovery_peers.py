"""Recovery after SIGKILL inside step 3, for the peers: arq, Celery, Procrastinate, DBOS (issue 7).

    python bench/recovery_peers.py [--runs 50] [--step-delay 2] [--max-wait 120] [--quick]

The peers' side of bench/recovery.py (initflow's). Per peer, a worker script
(bench/peers/recover_*.py, run in the peers' venv) runs N runs of seven steps; each
step records its ENTRY (a ``step_entries`` row: run, step, worker, time, in the peer's
own Postgres database), sleeps (``--step-delay`` 2 s; step 3 ``--step3-delay`` 8 s),
persists a checkpoint (DBOS: its own) and publishes progress on the run's Redis
channel. The first step waits at a gate (a Redis key) until the first worker, "a",
holds all N runs; then every run sits inside step 3 at the same moment, and "a" is
SIGKILLed there:

  (a) restart: "a" is started again with the same identity (Celery hostname, DBOS
      executor id; arq and Procrastinate have none);
  (b) standby: a second worker "b" is alive before the kill (started once every run
      is inside step 3 on "a" — earlier, Celery and arq, one task/job per step, would
      give it steps 2-3 — and ready before the kill; hence step 3's 8 s).

each on the peer's DEFAULTS and TUNED to a 10 s lease (``--lease``):

  arq            job_timeout (default 300 s; tuned 10 s, one job per step so that it
                 fits): a running job's in-progress key lives job_timeout + 10 s
  Celery         acks_late on Redis, visibility_timeout (default 3600 s; tuned 10 s);
                 kombu restores expired messages at consumer start and then on every
                 10th tick of a 10 s timer, i.e. every ~100 s
  Procrastinate  default: nothing retries a dead worker's ``doing`` jobs; tuned:
                 heartbeat every 2 s, and a get_stalled_jobs(10 s) + retry_job loop
                 (every second, in every worker)
  DBOS           default: an instance recovers its own executor's workflows at launch,
                 never another's; tuned: a Redis lease per instance, and the survivor
                 calls recover_pending_workflows for an expired one

Measured per run killed inside step 3: time from the SIGKILL to the run's next step
entry (step 3 again, or step 4 if the kill fell between step 3's checkpoint and its
end) — p50/p99/max; for (a) also the worker's restart (spawn -> consuming). No wait
is longer than ``--max-wait`` (120 s): a run not resumed by then counts as "> 120" (the
configured figure is printed beside it) and the scenario is not waited out. Counted:
duplicate step executions — entries beyond the expected (two for the killed step 3,
one for every other step) plus completions beyond one per run — and lost runs (not
finished within 7 x step delay + 30 s of the last resume; "-" when capped). Each
scenario gets its own database (dropped after) and Redis database (of a private
redis-server: kombu's keys have no prefix); the four peers run concurrently
(--sequential: one after the other), each peer's four scenarios in turn.

Reproduce (from the repository root; Postgres and Redis as in the README; the peers in
their own venv, see bench/requirements-peers.txt):

    python bench/recovery_peers.py --quick        # 10 runs, 30 s cap, ~3 min
    python bench/recovery_peers.py                # 50 runs, 120 s cap, ~9 min
    # options: --only arq,celery,procrastinate,dbos  --settings default,tuned
    #          --modes restart,standby  --peers-python PATH  --postgres-url URL  --keep
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from harness import POSTGRES_ADMIN_URL, private_redis, wait_for
from redis.asyncio import Redis

HERE = Path(__file__).resolve().parent
PEERS_DIR = HERE / "peers"
MARK = "@@bench"
STEPS = 7
STEP3 = 2  # position of step 3 (create_environments)
DEFAULT_PEERS_PYTHON = "/tmp/bench-venv/bin/python"


@dataclass(frozen=True)
class Peer:
    key: str
    label: str
    script: str
    default: str  # the recovery figure by configuration, default setting
    tuned: str
    restart_default: str = ""  # when the restart path differs from the standby one


PEERS = (
    Peer("arq", "arq", "recover_arq.py",
         "in-progress key 310 s", "in-progress key 20 s"),
    Peer("celery", "Celery acks_late", "recover_celery.py",
         "visibility 3600 s", "visibility 10 s; restore every ~100 s"),
    Peer("procrastinate", "Procrastinate", "recover_procrastinate.py",
         "never (no stalled-job retry)", "heartbeat 10 s + retry loop"),
    Peer("dbos", "DBOS", "recover_dbos.py",
         "never (other executor)", "Redis lease + recover API",
         restart_default="at launch"),
)  # fmt: skip
SETTINGS = ("default", "tuned")
MODES = ("restart", "standby")

CREATE_TABLES = """
CREATE TABLE IF NOT EXISTS step_entries (
    id bigserial PRIMARY KEY, run_id text NOT NULL, position integer NOT NULL,
    worker text NOT NULL, entered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    left_at timestamptz);
CREATE TABLE IF NOT EXISTS run_done (
    run_id text NOT NULL, worker text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp());
"""  # the same tables as bench/peers/common.py's RECOVERY_DDL (created early, to poll)
IN_STEP3 = "SELECT count(DISTINCT run_id) FROM step_entries WHERE position = $1 AND left_at IS NULL"
KILLED = """
SELECT DISTINCT run_id FROM step_entries
WHERE position = $1 AND worker = 'a' AND entered_at < $2 AND left_at IS NULL
"""
RESUMED = """
SELECT run_id, min(entered_at) AS at FROM step_entries
WHERE position >= $1 AND entered_at > $2 AND run_id = ANY($3::text[]) GROUP BY run_id
"""
ENTRY_COUNTS = "SELECT run_id, position, count(*) AS n FROM step_entries GROUP BY 1, 2"
DONE_COUNTS = "SELECT run_id, count(*) AS n FROM run_done GROUP BY 1"


@dataclass
class Outcome:
    peer: Peer
    setting: str
    mode: str
    runs: int
    killed: int = 0
    latencies_s: list[float] = field(default_factory=list)
    not_resumed: int = 0
    startup_s: float | None = None
    duplicates: int = 0
    lost: int | None = None
    error: str | None = None

    @property
    def configured(self) -> str:
        if self.setting == "tuned":
            return self.peer.tuned
        if self.mode == "restart" and self.peer.restart_default:
            return self.peer.restart_default
        return self.peer.default


class WorkerProcess:
    """One peer worker process; READY on its stdout once it consumes."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 120) -> float:
        """Spawn, wait for READY; returns the seconds that took."""
        started = time.perf_counter()
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                *self.argv, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=log,
            )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.process.stdout.readline()
                if not line:
                    await self.process.wait()
                    raise RuntimeError(f"{self.argv[1]} exited: {last_error(self.log)}")
                if line.startswith(f"{MARK} READY".encode()):
                    break
        self._drain = asyncio.create_task(self._discard(self.process.stdout))
        return time.perf_counter() - started

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()
        if self._drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain, 5)


def last_error(log: Path) -> str:
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "Exception" in line]
    return ((errors or lines or ["no output"])[-1])[:160]


# ------------------------------------------------------------ one scenario ----------


@dataclass
class Context:
    args: argparse.Namespace
    admin: asyncpg.Connection
    redis_url: str  # the peer's own Redis database
    work: Path


def worker_argv(ctx: Context, peer: Peer, setting: str, url: str, prefix: str) -> list[str]:
    args = ctx.args
    return [
        args.peers_python, str(PEERS_DIR / peer.script), "--runs", str(args.runs),
        "--database-url", url, "--redis-url", ctx.redis_url, "--prefix", prefix,
        "--setting", setting, "--lease", str(args.lease), "--step-delay", str(args.step_delay),
        "--step3-delay", str(args.step3_delay),
    ]  # fmt: skip


async def scenario(ctx: Context, peer: Peer, setting: str, mode: str) -> Outcome:
    args = ctx.args
    outcome = Outcome(peer, setting, mode, args.runs)
    key = f"{peer.key}_{setting}_{mode}"
    database = f"bench_rpeers_{key}_{os.getpid()}"
    await ctx.admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    await ctx.admin.execute(f'CREATE DATABASE "{database}"')
    url = args.postgres_url.rsplit("/", 1)[0] + "/" + database
    prefix = f"rp-{os.getpid()}-{key}"
    base = worker_argv(ctx, peer, setting, url, prefix)
    log = ctx.work / f"{key}.log"
    a = WorkerProcess([*base, "--worker-id", "a", "--submit"], log)
    b = WorkerProcess([*base, "--worker-id", "b"], log)
    again = WorkerProcess([*base, "--worker-id", "a"], log)
    redis = Redis.from_url(ctx.redis_url)
    db = await asyncpg.connect(url)
    try:
        await redis.flushdb()
        await db.execute(CREATE_TABLES)
        await exercise(ctx, outcome, db, redis, prefix=prefix, workers=(a, b, again))
    except (RuntimeError, TimeoutError, OSError, asyncpg.PostgresError) as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"[:200]
    finally:
        for worker in (a, b, again):
            await worker.kill()
        await db.close()
        await redis.flushdb()
        await redis.aclose()
        if not args.keep:
            await ctx.admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    return outcome


async def exercise(
    ctx: Context,
    outcome: Outcome,
    db: asyncpg.Connection,
    redis: Redis,
    *,
    prefix: str,
    workers: tuple[WorkerProcess, WorkerProcess, WorkerProcess],
) -> None:
    """Hold the runs on "a", open the gate, SIGKILL "a" inside step 3, watch the rest."""
    args = ctx.args
    a, b, again = workers
    await a.start()

    async def all_held() -> bool:
        return int(await redis.scard(f"{prefix}:held")) >= args.runs

    if not await wait_for(all_held, 120, 0.1):
        raise RuntimeError(f"only {await redis.scard(f'{prefix}:held')} runs reached the gate")
    await redis.set(f"{prefix}:gate", b"1")

    async def all_in_step3() -> bool:
        return int(await db.fetchval(IN_STEP3, STEP3)) >= args.runs

    await wait_for(all_in_step3, 2 * args.step_delay + 60)
    if outcome.mode == "standby":  # now, or Celery's and arq's "b" would take steps 2-3
        await b.start()
    killed_at = datetime.now(UTC)
    await a.kill()
    killed = [r["run_id"] for r in await db.fetch(KILLED, STEP3, killed_at)]
    outcome.killed = len(killed)
    if outcome.mode == "restart":
        outcome.startup_s = await again.start()
    resumed = await watch(db, killed, killed_at, args.max_wait)
    outcome.latencies_s = [(at - killed_at).total_seconds() for at in resumed.values()]
    outcome.not_resumed = len(killed) - len(resumed)
    if outcome.not_resumed == 0:

        async def all_done() -> bool:
            return int(await db.fetchval("SELECT count(DISTINCT run_id) FROM run_done")) >= (
                args.runs
            )

        await wait_for(all_done, STEPS * args.step_delay + 30, 0.2)
        done = int(await db.fetchval("SELECT count(DISTINCT run_id) FROM run_done"))
        outcome.lost = args.runs - done
    outcome.duplicates = await duplicates(db, set(killed))


async def watch(
    db: asyncpg.Connection, killed: list[str], killed_at: datetime, max_wait: float
) -> dict[str, datetime]:
    """The first entry after the kill of each killed run, waiting at most max_wait."""
    resumed: dict[str, datetime] = {}
    deadline = time.monotonic() + max_wait
    while True:
        rows = await db.fetch(RESUMED, STEP3, killed_at, killed)
        resumed = {r["run_id"]: r["at"] for r in rows}
        if len(resumed) >= len(killed) or time.monotonic() > deadline:
            return resumed
        await asyncio.sleep(0.1)


async def duplicates(db: asyncpg.Connection, killed: set[str]) -> int:
    """Entries beyond the expected (2 for a killed step 3, else 1), completions beyond 1."""
    extra = 0
    for row in await db.fetch(ENTRY_COUNTS):
        expected = 2 if row["position"] == STEP3 and row["run_id"] in killed else 1
        extra += max(0, int(row["n"]) - expected)
    for row in await db.fetch(DONE_COUNTS):
        extra += max(0, int(row["n"]) - 1)
    return extra


# ------------------------------------------------------------------ driver ----------


async def peer_scenarios(
    args: argparse.Namespace, peer: Peer, redis_url: str, work: Path
) -> list[Outcome]:
    outcomes: list[Outcome] = []
    admin = await asyncpg.connect(args.postgres_url)
    try:
        ctx = Context(args, admin, redis_url, work)
        for setting in args.settings:
            for mode in args.modes:
                print(f"… {peer.label}: {setting}, {mode}", file=sys.stderr, flush=True)
                outcomes.append(await scenario(ctx, peer, setting, mode))
    finally:
        await admin.close()
    return outcomes


async def run(args: argparse.Namespace) -> list[Outcome]:
    peers = [p for p in PEERS if not args.only or p.key in args.only]
    if not os.access(args.peers_python, os.X_OK):
        return [
            Outcome(p, s, m, args.runs, error=f"{args.peers_python} not found (see the top)")
            for p in peers
            for s in args.settings
            for m in args.modes
        ]
    with tempfile.TemporaryDirectory(prefix="recovery-peers-") as tmp:
        work = Path(tmp)
        async with private_redis(work) as redis_base:
            jobs = [
                peer_scenarios(args, peer, f"{redis_base}/{index + 1}", work)
                for index, peer in enumerate(peers)
            ]
            if args.sequential:
                results = [await job for job in jobs]
            else:
                results = list(await asyncio.gather(*jobs))
        if args.logs:
            shutil.copytree(work, args.logs, dirs_exist_ok=True)
    return [o for group in results for o in group]


def cell(values: list[float], q: float | None, missing: int, cap: float) -> str:
    """A percentile (q) or the max (None) over resumed + missing (= beyond the cap)."""
    total = len(values) + missing
    if total == 0:
        return "-"
    ordered = sorted(values) + [math.inf] * missing
    index = total - 1 if q is None else min(total - 1, math.ceil(q * total) - 1)
    value = ordered[index]
    return f"> {cap:g}" if math.isinf(value) else f"{value:.2f}"


def report(outcomes: list[Outcome], args: argparse.Namespace) -> None:
    print(
        f"recovery (peers): {args.runs} runs SIGKILLed inside step 3; step delay "
        f"{args.step_delay:g} s; tuned lease {args.lease:g} s; waits capped at "
        f"{args.max_wait:g} s; Postgres + Redis; {os.cpu_count()} cores"
    )
    header = (
        f"{'peer':17} {'setting':13} {'scenario':8} {'runs':>4} {'killed':>6} {'p50 s':>7} "
        f"{'p99 s':>7} {'max s':>7} {'dups':>4} {'lost':>4}  by configuration"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        setting = "default" if o.setting == "default" else f"tuned {args.lease:g} s"
        head = f"{o.peer.label:17} {setting:13} {o.mode:8} {o.runs:>4}"
        if o.error:
            print(f"{head} not run: {o.error}")
            continue
        cells = [cell(o.latencies_s, q, o.not_resumed, args.max_wait) for q in (0.5, 0.99, None)]
        lost = "-" if o.lost is None else str(o.lost)
        print(
            f"{head} {o.killed:>6} {cells[0]:>7} {cells[1]:>7} {cells[2]:>7} "
            f"{o.duplicates:>4} {lost:>4}  {o.configured}"
        )
        if o.startup_s is not None:
            print(f"{'':17} {'':13} {'':8} worker restart (spawn -> ready) {o.startup_s:.2f} s")
    print(
        f"\nTimes: SIGKILL -> the killed run's next step entry, over the runs killed inside "
        f"step 3; '> {args.max_wait:g}': not resumed within the cap (not waited out).\n"
        "dups: step entries beyond one per step (two for the killed step 3) plus "
        "completions beyond one per run; lost: runs not finished in the end "
        "('-': capped, unknown)."
    )


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    def keys(s: str) -> list[str]:
        return [k.strip() for k in s.split(",") if k.strip()]

    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=2.0, help="seconds per step")
    parser.add_argument(
        "--step3-delay", type=float, default=8.0, help="step 3's seconds (room to start b)"
    )
    parser.add_argument("--lease", type=float, default=10.0, help="the tuned lease, s")
    parser.add_argument("--max-wait", type=float, default=120.0, help="cap on every wait, s")
    parser.add_argument("--quick", action="store_true", help="10 runs, 30 s cap")
    parser.add_argument("--only", type=keys, default=[], help=",".join(p.key for p in PEERS))
    parser.add_argument("--settings", type=keys, default=list(SETTINGS))
    parser.add_argument("--modes", type=keys, default=list(MODES))
    parser.add_argument("--sequential", action="store_true", help="one peer at a time")
    parser.add_argument("--peers-python", default=DEFAULT_PEERS_PYTHON)
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--logs", default="", help="copy the workers' logs to this directory")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.max_wait = 10, 30.0
    return args


def main() -> None:
    args = parse()
    outcomes: list[Outcome] = []
    with contextlib.suppress(KeyboardInterrupt):
        outcomes = asyncio.run(run(args))
    report(outcomes, args)


if __name__ == "__main__":
    main()
