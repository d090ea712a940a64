"""DBOS: one async workflow per run, seven ``@DBOS.step``s (run by ``runner_throughput.py``).

DBOS checkpoints every step's output in its system database (Postgres, or SQLite
with ``sqlite:///…``) by itself; each step publishes a progress message on the run's
Redis channel. DBOS has no separate submit: ``start_workflow_async`` writes the
workflow's row and starts it. To keep submission out of the clock, as for the other
systems, every workflow waits at a gate before its first step; the gate opens once all
N are started. Submission's commits are still in the counts (one per run).
Concurrency: DBOS's default for direct starts — all N workflows at once.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
import sqlalchemy
from common import STEP_NAMES, Clock, arguments, channel, done, progress_message, ready
from dbos import DBOS, DBOSConfig
from sqlalchemy import event

args = arguments(__doc__ or "")
clock = Clock(args.runs)
gate = asyncio.Event()
redis = aioredis.from_url(args.redis_url)
# SQLite has no server-side counters: count transactions as SQLAlchemy ends them.
ended = dict.fromkeys(("commit", "rollback", "before_cursor_execute"), 0)


def _counter(name: str):  # type: ignore[no-untyped-def]
    def count(*_: object) -> None:
        ended[name] += 1

    return count


for _name in ended:
    event.listen(sqlalchemy.engine.Engine, _name, _counter(_name))


@DBOS.step()
async def step(run_id: str, position: int) -> dict[str, object]:
    clock.step()
    await redis.publish(channel(args.prefix, run_id), progress_message(run_id, position, position))
    return {"step": STEP_NAMES[position], "ok": True}


@DBOS.workflow()
async def initialize(run_id: str) -> int:
    await gate.wait()
    for position in range(len(STEP_NAMES)):
        await step(run_id, position)
    return len(STEP_NAMES)


async def main() -> None:
    url = args.database_url.replace("postgres://", "postgresql://", 1)
    if url.startswith("sqlite://"):  # initflow's sqlite:///abs is SQLAlchemy's sqlite:////abs
        url = "sqlite:///" + url.removeprefix("sqlite://")
    config: DBOSConfig = {
        "name": "bench-dbos",
        "system_database_url": url,
        "log_level": "WARNING",
    }
    cpu = ready()
    for key in ended:
        ended[key] = 0
    DBOS(config=config)
    DBOS.launch()
    started = time.perf_counter()
    handles = [await DBOS.start_workflow_async(initialize, f"run-{i}") for i in range(args.runs)]
    submit_ms = (time.perf_counter() - started) * 1000 / args.runs
    gate.set()
    results = await asyncio.gather(*(h.get_result() for h in handles))
    for _ in results:
        clock.run_done()
    DBOS.destroy()
    await redis.aclose()
    done(
        clock,
        cpu,
        submit_ms_per_run=submit_ms,
        sql_transactions=ended["commit"] + ended["rollback"],
        sql_rollbacks=ended["rollback"],
        sql_statements=ended["before_cursor_execute"],
        concurrency=args.runs,
    )


if __name__ == "__main__":
    asyncio.run(main())
