"""Celery (Redis broker, acks_late): a chain of seven tasks per run (run by runner_throughput.py).

The durable form chosen is Celery's own: each step is a task and the run is a
``chain``, so with ``acks_late=True`` a worker that dies loses only the step it was
running (the message is redelivered), never the run. Each task commits its checkpoint
row (``bench_checkpoints`` in Postgres, idempotent insert) and publishes a progress
message on the run's Redis channel. No result backend (nothing reads results).
Submission: N chains sent before the worker starts. Worker: in-process, ``threads``
pool, concurrency 16 (the steps are I/O; prefork on 2 cores would run 2 at a time),
default prefetch; stopped with a warm shutdown once every run is done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

import psycopg
import redis
from celery import Celery, chain
from common import (
    CHECKPOINT_DDL,
    CHECKPOINT_INSERT,
    STEP_NAMES,
    Clock,
    arguments,
    channel,
    done,
    progress_message,
    ready,
)
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

args = arguments(__doc__ or "")
clock = Clock(args.runs)
app = Celery("bench_celery", broker=args.redis_url)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    task_default_queue=f"{args.prefix}:celery",
)
publisher = redis.Redis.from_url(args.redis_url)
pools: list[ConnectionPool] = []  # opened after GO, in main()


@app.task(name="bench.step", acks_late=True)
def step(run_id: str, position: int) -> None:
    clock.step()
    with pools[0].connection() as connection:
        connection.execute(
            CHECKPOINT_INSERT, (run_id, STEP_NAMES[position], position, Jsonb({"ok": True}))
        )
    publisher.publish(channel(args.prefix, run_id), progress_message(run_id, position, position))
    if position == len(STEP_NAMES) - 1:
        clock.run_done()


def stop_when_done() -> None:
    clock.all_done.wait()
    os.kill(os.getpid(), signal.SIGTERM)  # Celery's warm shutdown


def main() -> None:
    with psycopg.connect(args.database_url, autocommit=True) as connection:
        connection.execute(CHECKPOINT_DDL)
    started = time.perf_counter()
    for i in range(args.runs):
        run_id = f"run-{i}"
        chain(*(step.si(run_id, p) for p in range(len(STEP_NAMES)))).apply_async()
    submit_ms = (time.perf_counter() - started) * 1000 / args.runs
    cpu = ready(submit_ms_per_run=submit_ms, concurrency=args.concurrency)
    pool = ConnectionPool(
        args.database_url, min_size=1, max_size=args.concurrency, kwargs={"autocommit": True}
    )
    pools.append(pool)
    threading.Thread(target=stop_when_done, daemon=True).start()
    worker = app.Worker(
        pool="threads",
        concurrency=args.concurrency,
        loglevel="WARNING",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        quiet=True,
    )
    with contextlib.suppress(SystemExit):
        worker.start()
    pool.close()
    publisher.close()
    app.pool.force_close_all()
    done(clock, cpu, worker_exitcode=worker.exitcode)


if __name__ == "__main__":
    main()
