"""arq recovery worker (run by ``bench/recovery_peers.py``): one job per step.

Each step is an arq job (``step(run_id, position)``, job id ``run:position``) that
records its entry, sleeps ``--step-delay``, commits its checkpoint, publishes progress
and enqueues the next step; a re-run step whose checkpoint exists is skipped. One job
per step, not per run, so that the tuned ``job_timeout`` (which is also the longest a
job may run) fits. arq keeps a job in its queue while it runs, guarded by an
"in-progress" key that expires ``job_timeout + 10`` s after the job started
(arq/worker.py: ``in_progress_timeout_s = max_timeout + 10``); a killed job runs again
once that key is gone, on any worker. Default job_timeout 300 s (key 310 s); tuned
``--lease`` s (key lease + 10 s). Step 1 waits at a gate (Redis key) until the
orchestrator opens it, so all runs are held by the first worker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings
from arq.worker import Worker, func
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
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

args = recovery_arguments(__doc__ or "")
QUEUE = f"{args.prefix}:arq:queue"
LAST = len(STEP_NAMES) - 1


async def wait_at_gate(redis: ArqRedis, run_id: str) -> None:
    await redis.sadd(held_key(args.prefix), run_id)
    while not await redis.exists(gate_key(args.prefix)):  # noqa: ASYNC110 (polls Redis)
        await asyncio.sleep(0.05)


async def step(ctx: dict[str, Any], run_id: str, position: int) -> None:
    pool: AsyncConnectionPool = ctx["pool"]
    redis: ArqRedis = ctx["redis"]
    name = STEP_NAMES[position]
    async with pool.connection() as connection:
        done = await (await connection.execute(CHECKPOINT_EXISTS, (run_id, name))).fetchone()
    if not done:
        if position == 0:
            await wait_at_gate(redis, run_id)
        async with pool.connection() as connection:
            row = await (
                await connection.execute(ENTRY_INSERT, (run_id, position, args.worker_id))
            ).fetchone()
        await asyncio.sleep(step_seconds(args, position))
        async with pool.connection() as connection:
            await connection.execute(CHECKPOINT_INSERT, (run_id, name, position, Jsonb({})))
            await connection.execute(ENTRY_LEFT, (row[0],))
            if position == LAST:
                await connection.execute(RUN_DONE_INSERT, (run_id, args.worker_id))
        await redis.publish(
            channel(args.prefix, run_id), progress_message(run_id, position, position)
        )
    if position < LAST:
        await redis.enqueue_job(
            "step", run_id, position + 1, _job_id=f"{run_id}:{position + 1}", _queue_name=QUEUE
        )


async def submit(settings: RedisSettings) -> None:
    async with await AsyncConnection.connect(args.database_url, autocommit=True) as connection:
        await connection.execute(CHECKPOINT_DDL)
        await connection.execute(RECOVERY_DDL)
    redis = await create_pool(settings, default_queue_name=QUEUE)
    for i in range(args.runs):
        await redis.enqueue_job("step", f"run-{i}", 0, _job_id=f"run-{i}:0")
    await redis.aclose()


async def main() -> None:
    settings = RedisSettings.from_dsn(args.redis_url)
    if args.submit:
        await submit(settings)
    pool = AsyncConnectionPool(
        args.database_url, min_size=1, max_size=20, kwargs={"autocommit": True}, open=False
    )
    await pool.open()

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["pool"] = pool
        announce("READY", worker=args.worker_id)

    options: dict[str, Any] = {"job_timeout": args.lease} if args.setting == "tuned" else {}
    worker = Worker(
        functions=[func(step, name="step")],  # type: ignore[list-item]
        redis_settings=settings,
        queue_name=QUEUE,
        max_jobs=args.runs + 10,
        handle_signals=False,
        on_startup=startup,
        **options,
    )
    await worker.main()


if __name__ == "__main__":
    asyncio.run(main())
