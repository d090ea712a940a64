"""What every participant of ``bench/runner_throughput.py`` shares (stdlib only).

Each participant (initflow, DBOS, Procrastinate, Celery, arq) is a script run in its
own process — initflow's in initflow's venv, the peers in the peers' venv — so their
imports never meet. They talk to the orchestrator over a three-line protocol:

    child  -> ``@@bench READY {json}``  setup done (runs submitted), no DB connection open
    parent -> ``GO``                    counters read; start working
    child  -> ``@@bench DONE {json}``   all runs finished and every connection closed

Everything else a child (or a library in it) prints is ignored, so banners and logs are
harmless. The clock runs from the first step entered to the last run finished, so
process start-up, worker start-up and submission are outside every system's figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from datetime import UTC, datetime
from typing import Any

# initflow's plan, copied so that no peer imports initflow.
STEP_NAMES = (
    "create_project",
    "render_template",
    "create_environments",
    "create_repository",
    "push_template",
    "configure_gitops",
    "finalize",
)
MARK = "@@bench"

# The checkpoint table of the peers that have none of their own (Procrastinate, Celery, arq).
CHECKPOINT_DDL = """
CREATE TABLE IF NOT EXISTS bench_checkpoints (
    run_id text NOT NULL,
    step text NOT NULL,
    position integer NOT NULL,
    result jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, step)
)
"""
# Idempotent: a step re-run after a crash converges on the same row.
CHECKPOINT_INSERT = (
    "INSERT INTO bench_checkpoints (run_id, step, position, result) "
    "VALUES (%s, %s, %s, %s) ON CONFLICT (run_id, step) DO NOTHING"
)
CHECKPOINTS_DONE = "SELECT step FROM bench_checkpoints WHERE run_id = %s"


def arguments(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url", default="", help="postgresql://… or sqlite:///…")
    parser.add_argument("--redis-url", default="", help="empty: initflow's in-process bus")
    parser.add_argument("--prefix", default="bench", help="Redis key and channel prefix")
    parser.add_argument("--work-dir", default="", help="scratch directory")
    return parser.parse_args()


def channel(prefix: str, run_id: str) -> str:
    """The channel initflow publishes a project's progress on."""
    return f"{prefix}:progress:{run_id}"


def progress_message(run_id: str, position: int, seq: int) -> bytes:
    """A progress event shaped like initflow's: type, seq, time, step, small status."""
    return json.dumps(
        {
            "projectId": run_id,
            "seq": seq,
            "type": "STEP_COMPLETED",
            "at": datetime.now(UTC).isoformat(),
            "step": STEP_NAMES[position],
            "status": {
                "status": "initializing" if position < len(STEP_NAMES) - 1 else "active",
                "progress": (position + 1) * 100 // len(STEP_NAMES),
                "steps": [
                    {"name": n, "status": "completed" if i <= position else "pending"}
                    for i, n in enumerate(STEP_NAMES)
                ],
            },
        },
        separators=(",", ":"),
    ).encode()


class Clock:
    """First step entered → last run finished, and exact counts (thread-safe)."""

    def __init__(self, expected_runs: int) -> None:
        self.expected = expected_runs
        self.first_step: float | None = None
        self.last_done: float | None = None
        self.steps = 0
        self.runs = 0
        self.all_done = threading.Event()
        self._lock = threading.Lock()

    def step(self) -> None:
        with self._lock:
            if self.first_step is None:
                self.first_step = time.perf_counter()
            self.steps += 1

    def run_done(self) -> None:
        with self._lock:
            self.runs += 1
            self.last_done = time.perf_counter()
            if self.runs >= self.expected:
                self.all_done.set()

    def finish(self) -> None:
        """For systems whose end is observed from outside (initflow's run_until_idle)."""
        with self._lock:
            self.last_done = time.perf_counter()

    @property
    def elapsed(self) -> float:
        if self.first_step is None or self.last_done is None:
            return float("nan")
        return self.last_done - self.first_step


def _send(kind: str, payload: dict[str, Any]) -> None:
    out = sys.__stdout__ or sys.stdout  # Celery swaps sys.stdout for a logger
    out.write(f"{MARK} {kind} {json.dumps(payload)}\n")
    out.flush()


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ready(**info: Any) -> float:
    """Announce the end of setup, wait for GO; returns the CPU time spent so far."""
    _send("READY", info)
    line = sys.stdin.readline()
    if line.strip() != "GO":
        raise SystemExit(f"expected GO from the orchestrator, got {line!r}")
    return cpu_seconds()


def done(clock: Clock, cpu_at_go: float, **extra: Any) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    _send(
        "DONE",
        {
            "elapsed_s": clock.elapsed,
            "runs": clock.runs,
            "steps": clock.steps,
            "cpu_s": usage.ru_utime + usage.ru_stime - cpu_at_go,
            "peak_rss_mb": usage.ru_maxrss / 1024,
            **extra,
        },
    )


# ------------------------------------------------ bench/recovery_peers.py (issue 7) ----
# Added for the recovery benchmark; nothing above uses it.

STEP3 = 2  # position of "step 3" (create_environments)
# Every step ENTRY is a row (left_at set when the step ends), every finished run a row:
# the orchestrator reads resume times, duplicates and lost runs from them.
RECOVERY_DDL = """
CREATE TABLE IF NOT EXISTS step_entries (
    id bigserial PRIMARY KEY,
    run_id text NOT NULL,
    position integer NOT NULL,
    worker text NOT NULL,
    entered_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    left_at timestamptz
);
CREATE TABLE IF NOT EXISTS run_done (
    run_id text NOT NULL,
    worker text NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
"""
ENTRY_INSERT = (
    "INSERT INTO step_entries (run_id, position, worker) VALUES (%s, %s, %s) RETURNING id"
)
ENTRY_LEFT = "UPDATE step_entries SET left_at = clock_timestamp() WHERE id = %s"
RUN_DONE_INSERT = "INSERT INTO run_done (run_id, worker) VALUES (%s, %s)"
CHECKPOINT_EXISTS = "SELECT 1 FROM bench_checkpoints WHERE run_id = %s AND step = %s"


def recovery_arguments(description: str) -> argparse.Namespace:
    """The options every ``bench/peers/recover_*.py`` worker takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--prefix", required=True, help="Redis key and queue prefix")
    parser.add_argument("--worker-id", required=True, help="a, b: the instance's identity")
    parser.add_argument("--setting", choices=("default", "tuned"), default="default")
    parser.add_argument("--lease", type=float, default=10.0, help="tuned lease, seconds")
    parser.add_argument("--step-delay", type=float, default=2.0, help="seconds per step")
    parser.add_argument("--step3-delay", type=float, default=0.0, help="step 3's (0: same)")
    parser.add_argument("--submit", action="store_true", help="submit the N runs first")
    return parser.parse_args()


def step_seconds(args: argparse.Namespace, position: int) -> float:
    """How long a step sleeps: step 3 may last longer (room to start a standby worker)."""
    if position == STEP3 and args.step3_delay > 0:
        return float(args.step3_delay)
    return float(args.step_delay)


def gate_key(prefix: str) -> str:
    """Set by the orchestrator once the runs may leave their first step's gate."""
    return f"{prefix}:gate"


def held_key(prefix: str) -> str:
    """A set of the runs waiting at the gate (all held by the first worker)."""
    return f"{prefix}:held"


def announce(kind: str, **info: Any) -> None:
    """``@@bench <kind> {json}`` on the real stdout (READY: the worker is consuming)."""
    _send(kind, info)
