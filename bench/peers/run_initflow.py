"""initflow's own runner on seven no-op steps (run by ``bench/runner_throughput.py``).

Setup (not timed): migrate, create a user and N projects through ProjectService, close
the database. Timed: open the database and the bus, ``Runner.run_until_idle()`` with a
registry whose seven steps are no-ops returning a small checkpoint, close everything.

SQL is also counted at the driver (asyncpg or aiosqlite): statements (round trips),
transactions (explicit ones plus every statement outside one, as the server counts
them) and write transactions (those that changed something).
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
from common import STEP_NAMES, Clock, arguments, done, ready

from initflow.bus.memory import MemoryBus
from initflow.components import build_bus, catalog_for
from initflow.db import open_database
from initflow.event_loop import use_fastest_loop
from initflow.metrics import Metrics
from initflow.runner.registry import StepContext, StepResult
from initflow.runner.steps import default_registry
from initflow.runner.worker import MAX_CONCURRENT_RUNS, Runner
from initflow.services.auth import create_user
from initflow.services.projects import CreateProjectRequest, ProjectService
from initflow.settings import Settings

WRITE = re.compile(r"^\s*(INSERT|UPDATE|DELETE|WITH\b.*\b(UPDATE|INSERT|DELETE)\b)", re.I | re.S)


class SqlCounter:
    def __init__(self) -> None:
        self.enabled = False
        self.trace = bool(os.environ.get("BENCH_TRACE_SQL"))
        self.statements = 0
        self.transactions = 0
        self.writes = 0
        self.pool_resets = 0
        self.kinds: dict[str, int] = {}
        self._wrote: dict[int, bool] = {}

    def saw(self, connection: object, sql: str, in_transaction: bool) -> None:
        if not self.enabled:
            return
        self.statements += 1
        if self.trace:
            print(f"[sql] {'T' if in_transaction else '-'} {sql[:110]!r}", file=sys.stderr)
        head = sql.lstrip()[:8].upper()
        if sql.startswith("SELECT pg_advisory_unlock_all()"):  # asyncpg's pool reset
            self.pool_resets += 1
        key = id(connection)
        kind = head.split()[0] if head else "?"
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if head.startswith("BEGIN"):
            self._wrote[key] = False
        elif head.startswith(("COMMIT", "ROLLBACK")):
            self.transactions += 1
            self.writes += self._wrote.pop(key, False)
        elif in_transaction:
            if WRITE.match(sql):
                self._wrote[key] = True
        else:
            self.transactions += 1
            self.writes += bool(WRITE.match(sql))

    def install(self) -> None:
        counter = self
        pg = asyncpg.connection.Connection
        pg_execute, pg_exec, pg_many = pg.execute, pg._execute, pg._executemany

        async def execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not args:  # with args asyncpg goes through _execute, counted there
                counter.saw(self, query, self.is_in_transaction())
            return await pg_execute(self, query, *args, **kwargs)

        async def _execute(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            counter.saw(self, query, self.is_in_transaction())
            return await pg_exec(self, query, *args, **kwargs)

        async def _executemany(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            counter.saw(self, query, self.is_in_transaction())
            return await pg_many(self, query, *args, **kwargs)

        pg.execute, pg._execute, pg._executemany = execute, _execute, _executemany  # type: ignore[method-assign]

        lite = aiosqlite.Connection
        for name in ("execute", "execute_fetchall", "execute_insert", "executemany"):
            original = getattr(lite, name)

            async def wrapped(self: Any, sql: str, *args: Any, _o: Any = original) -> Any:
                counter.saw(self, sql, self.in_transaction)
                return await _o(self, sql, *args)

            setattr(lite, name, wrapped)
        lite_commit = lite.commit

        async def commit(self: Any) -> None:
            if self.in_transaction:
                counter.saw(self, "COMMIT", True)
            await lite_commit(self)

        lite.commit = commit  # type: ignore[method-assign]


class NoopStep:
    def __init__(self, name: str, clock: Clock) -> None:
        self.name = name
        self._clock = clock

    async def run(self, ctx: StepContext) -> StepResult:
        self._clock.step()
        return StepResult(message="no-op", checkpoint={"step": self.name, "ok": True})


async def main() -> None:
    args = arguments(__doc__ or "")
    clock = Clock(args.runs)
    counter = SqlCounter()
    counter.install()
    settings = Settings(
        data_dir=Path(args.work_dir),
        database_url=args.database_url,
        redis_url=args.redis_url or None,
        redis_prefix=args.prefix,
        instance_id="bench",
        poll_interval_seconds=0.5,
    )
    url = settings.effective_database_url
    database = await open_database(url, migrate=True)
    owner, _ = await create_user("bench")
    projects = ProjectService(catalog_for(settings), MemoryBus())
    started = time.perf_counter()
    for index in range(args.runs):
        await projects.create(owner, CreateProjectRequest(f"bench {index}", "python-service"))
    submit_ms = (time.perf_counter() - started) * 1000 / args.runs
    await database.close()

    registry = default_registry().replaced(**{n: NoopStep(n, clock) for n in STEP_NAMES})
    cpu = ready(submit_ms_per_run=submit_ms, concurrency=MAX_CONCURRENT_RUNS)
    counter.enabled = True
    database = await open_database(url, migrate=False)
    bus = build_bus(settings)
    await bus.start()
    runner = Runner(
        settings=settings,
        instance_id="bench",
        bus=bus,
        registry=registry,
        catalog=catalog_for(settings),
        metrics=Metrics(),
    )
    await runner.run_until_idle()
    clock.finish()
    await runner.stop()
    await bus.close()
    await database.close()
    counter.enabled = False
    done(
        clock,
        cpu,
        sql_statements=counter.statements,
        sql_transactions=counter.transactions,
        sql_write_transactions=counter.writes,
        sql_pool_resets=counter.pool_resets,
        sql_kinds=counter.kinds,
    )


if __name__ == "__main__":
    use_fastest_loop()  # as `initflow worker` does
    asyncio.run(main())
