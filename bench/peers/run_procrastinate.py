"""Procrastinate: one job per run doing seven checkpointed steps (run by runner_throughput.py).

The durable form chosen: a single job whose steps each commit a checkpoint row
(``bench_checkpoints``, in the same Postgres as Procrastinate's queue) and then publish
a progress message on the run's Redis channel; a retried job first reads its
checkpoints and skips the steps already done. (Seven chained jobs would add a
defer, a fetch and a finish per step — more database work, not less.) Submission:
N jobs deferred before the worker starts. Worker: ``run_worker_async(concurrency=16,
wait=False)``, which returns once the queue is empty.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from common import (
    CHECKPOINT_DDL,
    STEP_NAMES,
    Clock,
    arguments,
    channel,
    done,
    progress_message,
    ready,
)
from procrastinate import App, PsycopgConnector

args = arguments(__doc__ or "")
clock = Clock(args.runs)
redis = aioredis.from_url(args.redis_url)
app = App(connector=PsycopgConnector(conninfo=args.database_url))

DONE_STEPS = "SELECT step FROM bench_checkpoints WHERE run_id = %(run_id)s"
CHECKPOINT = (
    "INSERT INTO bench_checkpoints (run_id, step, position, result) "
    "VALUES (%(run_id)s, %(step)s, %(position)s, %(result)s) "
    "ON CONFLICT (run_id, step) DO NOTHING"
)


@app.task(name="initialize", retry=3)
async def initialize(run_id: str) -> None:
    connector = app.connector
    done_steps = {
        r["step"] for r in await connector.execute_query_all_async(DONE_STEPS, run_id=run_id)
    }
    for position, name in enumerate(STEP_NAMES):
        if name in done_steps:
            continue
        clock.step()
        await connector.execute_query_async(
            CHECKPOINT, run_id=run_id, step=name, position=position, result={"ok": True}
        )
        await redis.publish(
            channel(args.prefix, run_id), progress_message(run_id, position, position)
        )
    clock.run_done()


async def main() -> None:
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        await app.connector.execute_query_async(CHECKPOINT_DDL)
        started = time.perf_counter()
        await initialize.batch_defer_async(*({"run_id": f"run-{i}"} for i in range(args.runs)))
        submit_ms = (time.perf_counter() - started) * 1000 / args.runs
    cpu = ready(submit_ms_per_run=submit_ms, concurrency=args.concurrency)
    async with app.open_async():
        await app.run_worker_async(
            concurrency=args.concurrency, wait=False, install_signal_handlers=False
        )
    await redis.aclose()
    done(clock, cpu)


if __name__ == "__main__":
    asyncio.run(main())
