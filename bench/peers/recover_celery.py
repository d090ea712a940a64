"""Celery (acks_late, Redis broker) recovery worker (run by ``bench/recovery_peers.py``).

A run is a ``chain`` of seven tasks; each records its entry, sleeps ``--step-delay``,
commits its checkpoint and publishes progress (a redelivered task whose checkpoint
exists is skipped). With ``acks_late`` a task's message stays in kombu's Redis
``unacked`` hash while it runs; a killed worker's messages go back to the queue only
when some worker's ``QoS.restore_visible`` finds them older than ``visibility_timeout``
(kombu/transport/redis.py: default 3600 s; it runs at consumer start and on every 10th
call of a 10 s timer). Default: 3600 s. Tuned: ``broker_transport_options =
{"visibility_timeout": --lease}``. Worker: threads pool, concurrency N, hostname
``<worker-id>@bench`` (the same on restart), Celery's defaults otherwise. Step 1 waits
at a gate (Redis key) until the orchestrator opens it.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
import redis
from celery import Celery, chain
from celery.signals import worker_ready
from common import (
    CHECKPOINT_DDL,
    CHECKPOINT_EXISTS,
    CHECKPOINT_INSERT,
    ENTRY_INSERT,
    ENTRY_LEFT,
    RECOVERY_DDL,
    RUN_DONE_INSERT,
    STEP_NAMES,
    announce,
    channel,
    gate_key,
    held_key,
    progress_message,
    recovery_arguments,
    step_seconds,
)
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

args = recovery_arguments(__doc__ or "")
app = Celery("bench_recover_celery", broker=args.redis_url)
app.conf.update(
    task_acks_late=True,
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,
    task_default_queue=f"{args.prefix}:celery",
)
if args.setting == "tuned":
    app.conf.broker_transport_options = {"visibility_timeout": args.lease}
publisher = redis.Redis.from_url(args.redis_url)
pool = ConnectionPool(
    args.database_url, min_size=1, max_size=args.runs + 4, kwargs={"autocommit": True}, open=False
)


def wait_at_gate(run_id: str) -> None:
    publisher.sadd(held_key(args.prefix), run_id)
    while not publisher.exists(gate_key(args.prefix)):
        time.sleep(0.05)


@app.task(name="bench.step", acks_late=True)
def step(run_id: str, position: int) -> None:
    name = STEP_NAMES[position]
    with pool.connection() as connection:
        if connection.execute(CHECKPOINT_EXISTS, (run_id, name)).fetchone():
            return
    if position == 0:
        wait_at_gate(run_id)
    with pool.connection() as connection:
        row = connection.execute(ENTRY_INSERT, (run_id, position, args.worker_id)).fetchone()
    assert row is not None
    time.sleep(step_seconds(args, position))
    with pool.connection() as connection:
        connection.execute(CHECKPOINT_INSERT, (run_id, name, position, Jsonb({})))
        connection.execute(ENTRY_LEFT, (row[0],))
        if position == len(STEP_NAMES) - 1:
            connection.execute(RUN_DONE_INSERT, (run_id, args.worker_id))
    publisher.publish(channel(args.prefix, run_id), progress_message(run_id, position, position))


@worker_ready.connect
def on_ready(**_: Any) -> None:
    announce("READY", worker=args.worker_id)


def main() -> None:
    if args.submit:
        with psycopg.connect(args.database_url, autocommit=True) as connection:
            connection.execute(CHECKPOINT_DDL)
            connection.execute(RECOVERY_DDL)
        for i in range(args.runs):
            chain(*(step.si(f"run-{i}", p) for p in range(len(STEP_NAMES)))).apply_async()
    pool.open()
    worker = app.Worker(
        pool="threads",
        concurrency=args.runs,
        hostname=f"{args.worker_id}@bench",
        loglevel="WARNING",
        quiet=True,
    )
    worker.start()


if __name__ == "__main__":
    main()
