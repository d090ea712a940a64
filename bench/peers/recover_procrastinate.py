"""Procrastinate recovery worker (run by ``bench/recovery_peers.py``): one job per run.

A job runs the seven steps; each records its entry, sleeps ``--step-delay``, commits
its checkpoint and publishes progress; a retried job skips the checkpointed steps.
Procrastinate 3.x workers write a heartbeat (``update_heartbeat_interval``, default
10 s) but never retry a dead worker's ``doing`` jobs themselves: that takes a caller
of ``JobManager.get_stalled_jobs`` + ``retry_job`` (the documented recipe is a periodic
task); a starting worker only prunes workers silent for ``stalled_worker_timeout``
(30 s). Default: no such caller, so a killed job stays ``doing``. Tuned (``--lease``):
heartbeat every lease/5 s, ``stalled_worker_timeout`` = lease, and every worker
retries, once a second, the jobs of workers silent for more than the lease. Step 1
waits at a gate (Redis key) until the orchestrator opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import redis.asyncio as aioredis
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
from procrastinate import App, PsycopgConnector
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

args = recovery_arguments(__doc__ or "")
redis = aioredis.from_url(args.redis_url)
app = App(connector=PsycopgConnector(conninfo=args.database_url))
bench_pool = AsyncConnectionPool(
    args.database_url, min_size=1, max_size=20, kwargs={"autocommit": True}, open=False
)


async def wait_at_gate(run_id: str) -> None:
    await redis.sadd(held_key(args.prefix), run_id)
    while not await redis.exists(gate_key(args.prefix)):  # noqa: ASYNC110 (polls Redis)
        await asyncio.sleep(0.05)


async def run_step(run_id: str, position: int) -> None:
    name = STEP_NAMES[position]
    async with bench_pool.connection() as connection:
        if await (await connection.execute(CHECKPOINT_EXISTS, (run_id, name))).fetchone():
            return
    if position == 0:
        await wait_at_gate(run_id)
    async with bench_pool.connection() as connection:
        cursor = await connection.execute(ENTRY_INSERT, (run_id, position, args.worker_id))
        row = await cursor.fetchone()
    assert row is not None
    await asyncio.sleep(step_seconds(args, position))
    async with bench_pool.connection() as connection:
        await connection.execute(CHECKPOINT_INSERT, (run_id, name, position, Jsonb({})))
        await connection.execute(ENTRY_LEFT, (row[0],))
        if position == len(STEP_NAMES) - 1:
            await connection.execute(RUN_DONE_INSERT, (run_id, args.worker_id))
    await redis.publish(channel(args.prefix, run_id), progress_message(run_id, position, position))


@app.task(name="initialize")
async def initialize(run_id: str) -> None:
    for position in range(len(STEP_NAMES)):
        await run_step(run_id, position)


async def retry_stalled_jobs() -> None:
    """The tuned setting's caller of the stalled-jobs API (every worker runs one)."""
    while True:
        await asyncio.sleep(1)
        try:
            for job in await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=args.lease):
                with contextlib.suppress(Exception):  # another worker retried it first
                    await app.job_manager.retry_job(job)
        except Exception as exc:
            print(f"retry_stalled_jobs: {exc!r}", file=sys.stderr)


async def main() -> None:
    await bench_pool.open()
    async with app.open_async():
        if args.submit:
            await app.schema_manager.apply_schema_async()
            async with bench_pool.connection() as connection:
                await connection.execute(CHECKPOINT_DDL)
                await connection.execute(RECOVERY_DDL)
            await initialize.batch_defer_async(*({"run_id": f"run-{i}"} for i in range(args.runs)))
        options: dict[str, float] = {}
        tasks = []
        if args.setting == "tuned":
            options = {
                "update_heartbeat_interval": args.lease / 5,
                "stalled_worker_timeout": args.lease,
            }
            tasks.append(asyncio.create_task(retry_stalled_jobs()))
        announce("READY", worker=args.worker_id)
        await app.run_worker_async(
            concurrency=args.runs + 4,
            wait=True,
            install_signal_handlers=False,
            **options,  # type: ignore[arg-type]
        )


if __name__ == "__main__":
    asyncio.run(main())
