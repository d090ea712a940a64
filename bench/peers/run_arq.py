"""arq (Redis): one job per run doing seven checkpointed steps (run by runner_throughput.py).

arq has no chains, so a run is one job: each step commits its checkpoint row
(``bench_checkpoints`` in Postgres, idempotent insert) and publishes a progress
message on the run's Redis channel; a re-run job reads its checkpoints first and skips
the steps already done. Submission: N jobs enqueued before the worker starts. Worker:
in-process, ``max_jobs=16``, ``burst=True`` (returns when the queue is empty), arq's
defaults otherwise (results kept for an hour).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import Worker
from common import (
    CHECKPOINT_DDL,
    CHECKPOINT_INSERT,
    CHECKPOINTS_DONE,
    STEP_NAMES,
    Clock,
    arguments,
    channel,
    done,
    progress_message,
    ready,
)
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

args = arguments(__doc__ or "")
clock = Clock(args.runs)
QUEUE = f"{args.prefix}:arq:queue"


async def initialize(ctx: dict[str, Any], run_id: str) -> None:
    pool: AsyncConnectionPool = ctx["pool"]
    async with pool.connection() as connection:
        rows = await (await connection.execute(CHECKPOINTS_DONE, (run_id,))).fetchall()
    done_steps = {r[0] for r in rows}
    for position, name in enumerate(STEP_NAMES):
        if name in done_steps:
            continue
        clock.step()
        async with pool.connection() as connection:
            await connection.execute(
                CHECKPOINT_INSERT, (run_id, name, position, Jsonb({"ok": True}))
            )
        await ctx["redis"].publish(
            channel(args.prefix, run_id), progress_message(run_id, position, position)
        )
    clock.run_done()


async def main() -> None:
    settings = RedisSettings.from_dsn(args.redis_url)
    async with await AsyncConnection.connect(args.database_url, autocommit=True) as connection:
        await connection.execute(CHECKPOINT_DDL)
    redis = await create_pool(settings, default_queue_name=QUEUE)
    started = time.perf_counter()
    for i in range(args.runs):
        await redis.enqueue_job("initialize", f"run-{i}", _job_id=f"run-{i}")
    submit_ms = (time.perf_counter() - started) * 1000 / args.runs
    await redis.aclose()
    cpu = ready(submit_ms_per_run=submit_ms, concurrency=args.concurrency)
    pool = AsyncConnectionPool(
        args.database_url,
        min_size=1,
        max_size=args.concurrency,
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open()

    async def startup(ctx: dict[str, Any]) -> None:
        ctx["pool"] = pool

    worker = Worker(
        functions=[initialize],  # type: ignore[list-item]
        redis_settings=settings,
        queue_name=QUEUE,
        burst=True,
        max_jobs=args.concurrency,
        handle_signals=False,
        on_startup=startup,
    )
    await worker.main()
    await worker.close()
    await pool.close()
    done(clock, cpu)


if __name__ == "__main__":
    asyncio.run(main())
