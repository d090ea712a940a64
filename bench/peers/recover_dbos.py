"""DBOS recovery worker (run by ``bench/recovery_peers.py``): one workflow per run.

A workflow runs seven ``@DBOS.step``s; each records its entry, sleeps
``--step-delay`` and publishes progress; DBOS checkpoints each step's output in its
system database (Postgres) and re-runs only the unfinished step. Recovery: at
``DBOS.launch()`` an instance re-enqueues the PENDING workflows of its OWN executor id
and application version (dbos/_dbos.py, "Recover local workflows if not using a
recovery service"); another executor's workflows are recovered only through
``recover_pending_workflows(executor_ids)`` — what DBOS Conductor calls when it sees an
executor go away (dbos/_recovery.py). Instances get executor ids ``--worker-id``
(DBOS's default, ``local`` for every process unless DBOS__VMID, would make a second
instance's launch take over the first one's live workflows). Default: nothing else.
Tuned (``--lease``): each instance keeps a Redis key alive (TTL = lease, renewed every
lease/5 s) and, once a second, recovers the workflows of an instance whose key expired.
Step 1 waits at a gate (Redis key) until the orchestrator opens it.
"""

from __future__ import annotations

import threading
import time

import redis
from common import (
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
from dbos import DBOS, DBOSConfig, SetWorkflowID
from psycopg_pool import ConnectionPool

args = recovery_arguments(__doc__ or "")
INSTANCES = ("a", "b")
client = redis.Redis.from_url(args.redis_url)
pool = ConnectionPool(
    args.database_url, min_size=1, max_size=args.runs + 4, kwargs={"autocommit": True}, open=False
)


@DBOS.step()
def step(run_id: str, position: int) -> None:
    with pool.connection() as connection:
        row = connection.execute(ENTRY_INSERT, (run_id, position, args.worker_id)).fetchone()
    assert row is not None
    time.sleep(step_seconds(args, position))
    with pool.connection() as connection:
        connection.execute(ENTRY_LEFT, (row[0],))
        if position == len(STEP_NAMES) - 1:
            connection.execute(RUN_DONE_INSERT, (run_id, args.worker_id))
    client.publish(channel(args.prefix, run_id), progress_message(run_id, position, position))


@DBOS.workflow()
def initialize(run_id: str) -> None:
    client.sadd(held_key(args.prefix), run_id)
    while not client.exists(gate_key(args.prefix)):
        time.sleep(0.05)
    for position in range(len(STEP_NAMES)):
        step(run_id, position)


def alive_key(instance: str) -> str:
    return f"{args.prefix}:dbos:alive:{instance}"


def lease_loop() -> None:
    """Tuned: renew our lease; recover the workflows of an instance whose lease expired."""
    recovered: set[str] = set()
    renewed = 0.0
    while True:
        if time.monotonic() - renewed >= args.lease / 5:
            client.set(alive_key(args.worker_id), b"1", px=int(args.lease * 1000))
            renewed = time.monotonic()
        for other in INSTANCES:
            if other == args.worker_id:
                continue
            if client.exists(alive_key(other)):
                recovered.discard(other)
            elif other not in recovered:
                DBOS._recover_pending_workflows([other])
                recovered.add(other)
        time.sleep(1)


def main() -> None:
    pool.open()
    if args.submit:
        with pool.connection() as connection:
            connection.execute(RECOVERY_DDL)
    config: DBOSConfig = {
        "name": "bench-recover-dbos",
        "system_database_url": args.database_url.replace("postgres://", "postgresql://", 1),
        "log_level": "WARNING",
        "executor_id": args.worker_id,
    }
    DBOS(config=config)
    DBOS.launch()
    if args.setting == "tuned":
        client.set(alive_key(args.worker_id), b"1", px=int(args.lease * 1000))
        threading.Thread(target=lease_loop, daemon=True).start()
    if args.submit:
        for i in range(args.runs):
            with SetWorkflowID(f"run-{i}"):
                DBOS.start_workflow(initialize, f"run-{i}")
    announce("READY", worker=args.worker_id)
    threading.Event().wait()


if __name__ == "__main__":
    main()
