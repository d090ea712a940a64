"""projectStatus with 1k, 100k and 1M projects (issue 7). Prints a table; never asserts timings.

    python bench/snapshot.py [--sizes 1000,100000,1000000] [--quick] \\
        [--backends sqlite,postgres] [--json PATH]

What: the latency (p50 / p99 / max) of ``projectStatus(projectId:)`` over HTTP and the
requests/s at concurrency 16, against a database holding N projects (N = 1k, 100k, 1M),
on SQLite (the default ``initflow serve``) and Postgres; and the ``EXPLAIN`` of the two
statements one such request runs (the bearer-token lookup, the snapshot read of
``initflow/services/snapshots.py``): does each go through an index?

How:
1. Schema: the app's migrations (``open_database(migrate=True)``, as ``serve`` does) in a
   temp data dir (SQLite) or a fresh database ``initflow_bench_snapshot_<pid>`` (Postgres,
   dropped at the end). Not ``initflow migrate``: on SQLite it never exits.
2. Rows, in plain SQL, in the formats the app writes (SQLite: UUIDs as text, datetimes
   as ``isoformat(" ")`` with ``+00:00``, compact JSON text, enum values). Each project
   has its 7 ``initialization_steps`` rows; 94 % ACTIVE, 3 % INITIALIZING (a step
   running, started in the last 10 minutes), 2 % FAILED (a step failed after 3
   attempts), 1 % CANCELED; owned by max(1,000, N/100) users with bearer tokens. Python
   makes the users, the projects and the steps of unfinished runs (SQLite:
   ``executemany`` in one transaction; Postgres: ``copy_records_to_table``); the database
   makes the steps of the ACTIVE projects (94 % of the rows) from a 7-row template with
   one ``INSERT … SELECT``: the sqlite3 binding alone costs ~17 us a row here. Loader
   shortcuts, none of them visible in the result: SQLite journals the load in DELETE mode
   and then goes back to WAL (WAL would write every page twice); Postgres drops the
   secondary indexes and unique constraints of ``projects`` and ``initialization_steps``
   and builds them again after the rows (as pg_restore does), skips the foreign-key
   triggers in its own session, and runs ``ANALYZE`` (what autovacuum would do). Sizes
   build on each other in one database (1k, +99k, +900k); "pop s" is the increment.
   No ``progress_events`` rows: a finished run writes 15 events of ~2.4 KB (each carries
   the full status), ~36 GB for 1M projects, and ``projectStatus`` never reads them.
3. Check: sample projects of every state are read back in-process through the app's own
   code (``authenticate``, ``load_status``, the ORM) and compared field by field with the
   intended values; the SQL those calls send is taken from Tortoise's query log and
   ``EXPLAIN``-ed (SQLite: ``EXPLAIN QUERY PLAN``; a ``SCAN`` line, or a Postgres
   ``Seq Scan``, is a full scan).
4. Load: a real ``initflow serve --no-runner`` child (scrubbed environment, temp
   ``INITFLOW_DATA_DIR``, in-process bus) on the populated database; this process sends
   the ``projectStatus`` query ``initflow watch`` sends, as each project's owner, for
   projects drawn uniformly from the whole table: 100 warm-up + 1,000 sequential requests
   (p50 / p99 / max), then 1,000 requests from 16 concurrent clients (requests/s). Every
   answer is checked (no errors, the project's expected status); a wrong one aborts.
   Postgres: transactions and tuples read per request from ``pg_stat_database``.

Reproduce: Postgres at 127.0.0.1:5432 (user postgres, trust auth; or --postgres-url),
``python bench/snapshot.py`` (~9 minutes on 2 busy cores, most of it writing 1M
projects twice; ``--quick``: 1k and 100k, ~2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple
from uuid import UUID

import aiohttp
import asyncpg  # type: ignore[import-untyped]
from harness import POSTGRES_ADMIN_URL, free_port

from initflow.client.commands import STATUS as STATUS_QUERY  # what `initflow watch` reads
from initflow.db import open_database
from initflow.models import InitializationStep, Project
from initflow.services.auth import authenticate, hash_token
from initflow.services.snapshots import load_status
from initflow.settings import without_configuration
from initflow.states import ProjectState, StepState
from initflow.status import StatusView
from initflow.step_plan import STEP_NAMES, STEP_PLAN

DEFAULT_SIZES = (1_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 100_000)
INITFLOW = str(Path(sys.executable).parent / "initflow")
READY_SECONDS = 60.0
APP_SAMPLES = 550

MIN_USERS = 1_000
PROJECTS_PER_USER = 100
CHUNK = 50_000  # projects generated and inserted at a time
SALT = b"initflow-bench-snapshot"
EPOCH = datetime(2024, 12, 1, tzinfo=UTC)
SECONDS_BETWEEN_PROJECTS = 60  # 1M projects span ~694 days
NOW = datetime.now(UTC).replace(microsecond=0)
INSTANCE = "instance-5f0c2a9e71b3"
# A draw in 0..9999 below 9,400: ACTIVE (94 %); 9,700: INITIALIZING (3 %); 9,900: FAILED
# (2 %); else CANCELED (1 %).
MIX_LIMITS = (9_400, 9_700, 9_900)
MIX_STATES = (
    ProjectState.ACTIVE,
    ProjectState.INITIALIZING,
    ProjectState.FAILED,
    ProjectState.CANCELED,
)
TEMPLATES = (
    (
        "python-service",
        '{"description":"A Python web service","python_version":"3.11","port":9000}',
    ),
    ("static-site", '{"description":"A static website"}'),
)
ENVIRONMENTS = '["development","staging","production"]'
STEP_COUNT = len(STEP_PLAN)
WEIGHTS = tuple(s.weight for s in STEP_PLAN)
FAILURE = ("STEP_TIMEOUT", "Step did not finish within 300 s")

# A step's times: µs into the second its project was created in (created_at's µs are below
# 5,000; a run takes ~0.3 s).
STARTED_US = tuple(5_000 + 40_000 * position for position in range(STEP_COUNT))
COMPLETED_US = tuple(t + 30_000 for t in STARTED_US)
UPDATED_US = tuple(t + 50 for t in COMPLETED_US)
# (message, checkpoint) of each completed step, as the real steps write them; filled in
# by completed_texts() and, for the ACTIVE projects, by DONE_STEPS_SQL.
DONE_TEXTS = (
    ("Project '{name}' recorded", '{"workspace":"/data/workspaces/{id}"}'),
    ("Rendered 11 files from template 'python-service'", '{"files":11}'),
    ("Created 3 environments: development, staging, production",
     '{"environments":["development","staging","production"]}'),
    ("Created repository http://127.0.0.1:8000/git/{id}.git",
     '{"path":"/data/repositories/{id}.git"}'),
    ("Pushed initial commit {sha_a12}", '{"commit":"{sha_a}"}'),
    ("Committed Flux manifests for 3 environments ({sha_b12}); no cluster configured,"
     " apply skipped", '{"commit":"{sha_b}","applied":false}'),
    ("Project ready", "{}"),
)  # fmt: skip

USER_COLUMNS = ("id", "name", "token_hash", "is_admin", "created_at")
PROJECT_COLUMNS = (
    "id", "owner_id", "name", "slug", "template", "parameters", "environment_names", "status",
    "progress", "initialization_error", "idempotency_key", "last_seq", "lease_owner",
    "lease_token", "lease_expires_at", "next_attempt_at", "run_attempts", "created_at",
    "updated_at", "finished_at",
)  # fmt: skip
STEP_COLUMNS = (
    "project_id", "name", "position", "status", "progress", "message", "attempts",
    "started_at", "completed_at", "error_code", "error_message", "checkpoint",
    "next_attempt_at", "updated_at",
)  # fmt: skip

Row = tuple[Any, ...]

# The step rows of ACTIVE projects (94 % of all rows) are made by the database from their
# project rows and a 7-row template (bench_done_steps): the Python sqlite3 binding costs
# ~17 us a row here, 7M rows would take minutes. Same values as step_row() (checked by
# read_back() through the app); {h}: the id's 32 hex digits.
SQL_VALUES = (
    ("{name}", "p.name"), ("{id}", "p.id_text"), ("{sha_a12}", "substr(p.h || p.h, 1, 12)"),
    ("{sha_a}", "substr(p.h || p.h, 1, 40)"), ("{sha_b12}", "substr(p.h, 9, 12)"),
    ("{sha_b}", "substr(substr(p.h, 9) || p.h, 1, 40)"),
)  # fmt: skip


def sql_fill(column: str) -> str:
    """``fill()`` in SQL, on a template split by ``split_text()`` (one placeholder at most)."""
    cases = " ".join(f"WHEN '{placeholder}' THEN {value}" for placeholder, value in SQL_VALUES)
    return f"t.{column}_head || CASE t.{column}_var {cases} ELSE '' END || t.{column}_tail"


def split_text(text: str) -> tuple[str, str, str]:
    """'a {id} b' → ('a ', '{id}', ' b'); a text without a placeholder → (text, '', '')."""
    for placeholder, _ in SQL_VALUES:
        head, found, tail = text.partition(placeholder)
        if found:
            return head, found, tail
    return text, "", ""


_DONE_STEPS = """
INSERT INTO initialization_steps ({columns})
SELECT p.id, t.name, t.position, 'completed', 100, {message}, 1, {started}, {completed},
       NULL, NULL, {checkpoint}, NULL, {updated}
FROM (SELECT id, {id_text} AS id_text, replace({id_text}, '-', '') AS h, name, created_at
      FROM projects WHERE {new} AND status = 'active') AS p
CROSS JOIN bench_done_steps AS t
{order}
"""
_SQLITE_TIME = "substr(p.created_at, 1, 20) || t.{column}_text"  # "YYYY-MM-DD HH:MM:SS." + µs
_POSTGRES_TIME = "date_trunc('second', p.created_at) + t.{column}_us * interval '1 microsecond'"
DONE_STEPS_SQL = {
    sqlite: _DONE_STEPS.format(
        columns=", ".join(STEP_COLUMNS),
        message=sql_fill("message"),
        checkpoint=f"({sql_fill('checkpoint')}){'' if sqlite else '::jsonb'}",
        id_text="id" if sqlite else "id::text",
        # the chunk just inserted: rowids past the last one before it / its ids
        new="rowid > ?" if sqlite else "id = ANY($1::uuid[])",
        # SQLite's unique indexes are written leaf after leaf (Postgres builds them after)
        order="ORDER BY p.id, t.position" if sqlite else "",
        **{
            name: (_SQLITE_TIME if sqlite else _POSTGRES_TIME).format(column=name)
            for name in ("started", "completed", "updated")
        },
    )
    for sqlite in (True, False)
}
DONE_TEMPLATE_SQL = (
    "CREATE TEMP TABLE bench_done_steps (position INT, name TEXT, message_head TEXT,"
    " message_var TEXT, message_tail TEXT, checkpoint_head TEXT, checkpoint_var TEXT,"
    " checkpoint_tail TEXT, started_us INT, completed_us INT, updated_us INT,"
    " started_text TEXT, completed_text TEXT, updated_text TEXT)"
)


def done_template_row(position: int) -> Row:
    """bench_done_steps row: texts split at their placeholder, times in µs and as text."""
    message, checkpoint = DONE_TEXTS[position]
    times = (STARTED_US[position], COMPLETED_US[position], UPDATED_US[position])
    texts = (f"{us:06d}+00:00" for us in times)
    return (position, STEP_NAMES[position], *split_text(message), *split_text(checkpoint),
            *times, *texts)  # fmt: skip


# --- the data set: every project is a pure function of its number ----------------------


class Plan(NamedTuple):
    """Project number ``number`` (0, 1, …): its id, owner, state and where its run stands."""

    number: int
    id: str
    owner: int
    state: ProjectState
    step: int  # the step the run is in / stopped at (ACTIVE: STEP_COUNT)
    percent: int  # the running step's progress
    micro: int  # created_at's microseconds; the whole run lies within that second


def users_for(projects: int) -> int:
    return max(MIN_USERS, projects // PROJECTS_PER_USER)


def owner_of(number: int) -> int:
    """An owner that exists as soon as the project does (owners grow with the table)."""
    return number % users_for(number + 1)


def uuid_text(digest: bytes) -> str:
    """``str(UUID(bytes=digest, version=4))`` without building the UUID (1M times)."""
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[digest[8] >> 4 & 3]}{h[17:20]}-{h[20:]}"


@cache
def user_id(user: int) -> str:
    return uuid_text(hashlib.blake2b(b"user%d" % user, digest_size=16, key=SALT).digest())


def user_token(user: int) -> str:
    return f"ifl_bench{user:010d}"


def plan(number: int) -> Plan:
    digest = hashlib.blake2b(number.to_bytes(8, "little"), digest_size=16, key=SALT).digest()
    state = MIX_STATES[bisect.bisect_right(MIX_LIMITS, (digest[12] << 8 | digest[13]) % 10_000)]
    step = STEP_COUNT if state is ProjectState.ACTIVE else digest[14] % STEP_COUNT
    micro = 1_000 + digest[11] * 15  # before the first step starts (STARTED_US)
    return Plan(number, uuid_text(digest), owner_of(number), state, step, digest[15] % 100, micro)


def base_time(p: Plan) -> datetime:
    """The second the project was created in: one a minute from EPOCH on (ACTIVE, FAILED,
    CANCELED); a run still INITIALIZING started in the last 10 minutes before the bench.
    """
    if p.state is ProjectState.INITIALIZING:
        return NOW - timedelta(seconds=(p.number * 7 + p.micro) % 600)
    return EPOCH + timedelta(seconds=p.number * SECONDS_BETWEEN_PROJECTS)


DAYS = [str((EPOCH + timedelta(days=d)).date()) for d in range(800)]


def time_prefix(p: Plan, base: datetime) -> str:
    """``base.strftime("%Y-%m-%d %H:%M:%S.")``; by arithmetic for the one-a-minute projects."""
    if p.state is ProjectState.INITIALIZING:
        return base.strftime("%Y-%m-%d %H:%M:%S.")
    day, minute = divmod(p.number * SECONDS_BETWEEN_PROJECTS // 60, 1440)
    return f"{DAYS[day]} {minute // 60:02d}:{minute % 60:02d}:00."


class Clock:
    """Microseconds within the project's creation second → the column value the app writes.

    SQLite: Tortoise stores ``str(datetime)`` (= ``isoformat(" ")``); Postgres: timestamptz.
    """

    __slots__ = ("base", "prefix", "sqlite")

    def __init__(self, p: Plan, sqlite: bool) -> None:
        self.base = base_time(p)
        self.sqlite = sqlite
        self.prefix = time_prefix(p, self.base) if sqlite else ""

    def at(self, us: int) -> Any:
        if self.sqlite:
            return f"{self.prefix}{us:06d}+00:00"
        return self.base + timedelta(microseconds=us)


def db_time(moment: datetime, sqlite: bool) -> Any:
    return moment.isoformat(" ") if sqlite else moment


def completed_texts(p: Plan) -> list[tuple[str, str]]:
    """(message, checkpoint JSON) of each step once completed: ``DONE_TEXTS`` filled in."""
    digits = p.id.replace("-", "")
    sha_a, sha_b = (digits + digits)[:40], (digits[8:] + digits)[:40]
    values = (("{name}", f"Service {p.number}"), ("{id}", p.id), ("{sha_a12}", sha_a[:12]),
              ("{sha_a}", sha_a), ("{sha_b12}", sha_b[:12]), ("{sha_b}", sha_b))  # fmt: skip
    return [(fill(message, values), fill(checkpoint, values)) for message, checkpoint in DONE_TEXTS]


def fill(text: str, values: Sequence[tuple[str, str]]) -> str:
    for placeholder, value in values:
        text = text.replace(placeholder, value)
    return text


def step_row(p: Plan, position: int, clock: Clock, texts: Sequence[tuple[str, str]]) -> Row:
    """One step row, as the app would have written it (ACTIVE ones: see ``DONE_STEPS_SQL``)."""
    name, at = STEP_NAMES[position], clock.at
    start, end = STARTED_US[position], COMPLETED_US[position]
    if position < p.step:
        message, checkpoint = texts[position]
        return (p.id, name, position, "completed", 100, message, 1, at(start), at(end),
                None, None, checkpoint, None, at(UPDATED_US[position]))  # fmt: skip
    if position == p.step and p.state is ProjectState.INITIALIZING:
        message = f"{STEP_PLAN[position].title}: {p.percent}%"
        return (p.id, name, position, "running", p.percent, message, 1, at(start), None,
                None, None, "{}", None, at(start + 100 * p.percent + 10))  # fmt: skip
    if position == p.step and p.state is ProjectState.FAILED:
        code, error = FAILURE
        return (p.id, name, position, "failed", p.percent, None, 3, at(start), None,
                code, error, "{}", None, at(end))  # fmt: skip
    return (p.id, name, position, "pending", 0, None, 0, None, None,
            None, None, "{}", None, at(p.micro))  # fmt: skip


def project_row(p: Plan, clock: Clock) -> Row:
    template, parameters = TEMPLATES[p.number % len(TEMPLATES)]
    done = sum(WEIGHTS[: p.step])
    error: str | None = None
    lease_owner: str | None = None
    lease_expires: Any = None
    finished: Any = None
    if p.state is ProjectState.ACTIVE:
        progress, last_seq = 100, 2 * STEP_COUNT + 1
        updated = finished = clock.at(UPDATED_US[-1])
    elif p.state is ProjectState.INITIALIZING:
        progress, last_seq = done + WEIGHTS[p.step] * p.percent // 100, 2 * p.step + 1
        updated = clock.at(STARTED_US[p.step] + 100 * p.percent + 10)
        lease_owner = INSTANCE
        lease_expires = db_time(clock.base + timedelta(seconds=10), clock.sqlite)
    elif p.state is ProjectState.FAILED:
        progress, last_seq, error = done, 2 * p.step + 6, FAILURE[1]
        updated = finished = clock.at(COMPLETED_US[p.step])
    else:
        progress, last_seq = done, 2 * p.step + 2
        updated = finished = clock.at(STARTED_US[p.step] + 1_000)
    key = f"create-{p.number}" if p.number % 2 == 0 else None
    return (p.id, user_id(p.owner), f"Service {p.number}", f"service-{p.number}", template,
            parameters, ENVIRONMENTS, p.state.value, progress, error, key, last_seq,
            lease_owner, 1, lease_expires, None, 0, clock.at(p.micro), updated,
            finished)  # fmt: skip


def user_row(user: int, sqlite: bool) -> Row:
    created = EPOCH - timedelta(days=30) + timedelta(seconds=user, microseconds=1)
    name, token_hash = f"bench-user-{user}", hash_token(user_token(user))
    return (user_id(user), name, token_hash, 0 if sqlite else False, db_time(created, sqlite))


def user_rows(start: int, stop: int, sqlite: bool) -> list[Row]:
    return [user_row(user, sqlite) for user in range(start, stop)]


def project_rows(start: int, stop: int, sqlite: bool) -> tuple[list[Row], list[Row]]:
    """Projects ``start`` .. ``stop`` - 1, and the step rows of those not ACTIVE."""
    projects: list[Row] = []
    steps: list[Row] = []
    for number in range(start, stop):
        p = plan(number)
        clock = Clock(p, sqlite)
        projects.append(project_row(p, clock))
        if p.state is not ProjectState.ACTIVE:
            texts = completed_texts(p)
            steps += [step_row(p, position, clock, texts) for position in range(STEP_COUNT)]
    projects.sort()  # by id: SQLite writes its indexes leaf after leaf
    return projects, steps


def chunks(start: int, stop: int) -> Iterator[tuple[int, int]]:
    for low in range(start, stop, CHUNK):
        yield low, min(stop, low + CHUNK)


def generated(start: int, stop: int, sqlite: bool) -> Iterator[tuple[list[Row], list[Row]]]:
    """``project_rows`` chunk by chunk; a thread makes the next chunk while the caller writes
    this one (the database works with the GIL released)."""
    bounds = list(chunks(start, stop))
    if not bounds:
        return
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(project_rows, *bounds[0], sqlite)
        for following in [*bounds[1:], None]:
            rows = future.result()
            if following is not None:
                future = pool.submit(project_rows, *following, sqlite)
            yield rows


# --- backends: schema, bulk load, size, EXPLAIN ------------------------------------------


@dataclass
class QueryPlan:
    query: str
    uses_index: bool
    plan: list[str]


def child_env(data_dir: Path, database_url: str | None) -> dict[str, str]:
    """The developer's INITFLOW_* / DATABASE_URL / REDIS_URL never reach the child."""
    env = without_configuration(os.environ)
    env["INITFLOW_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    if database_url:
        env["DATABASE_URL"] = database_url
    return env


def migrate(database_url: str) -> None:
    """The schema, by the app's own migrations (``open_database(migrate=True)``, as serve).

    Not ``initflow migrate``: on SQLite it prints "migrations applied" and then never
    exits (the migration's aiosqlite worker thread is left running).
    """

    async def run() -> None:
        database = await open_database(database_url, migrate=True)
        await database.close()

    asyncio.run(run())


class SqliteTarget:
    name = "sqlite"

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / "initflow.sqlite3"
        self.server_database_url: str | None = None  # serve's default: the data dir's file
        self.app_url = f"sqlite://{self.path}"

    def create(self) -> None:
        migrate(self.app_url)

    def insert(self, users: tuple[int, int], projects: tuple[int, int]) -> None:
        """One transaction. The loader journals in DELETE mode (WAL would write every page
        twice, into the log and at the checkpoint), then sets WAL back, as the app has it."""
        db = sqlite3.connect(self.path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=DELETE")
            db.execute("PRAGMA cache_size=-4194304")  # 4 GiB, this connection only
            db.execute("BEGIN")
            db.executemany(insert_sql("users", USER_COLUMNS), user_rows(*users, sqlite=True))
            db.execute(DONE_TEMPLATE_SQL)
            db.executemany(f"INSERT INTO bench_done_steps VALUES ({', '.join('?' * 14)})",
                           [done_template_row(i) for i in range(STEP_COUNT)])  # fmt: skip
            for rows, steps in generated(*projects, sqlite=True):
                (last,) = db.execute("SELECT coalesce(max(rowid), 0) FROM projects").fetchone()
                db.executemany(insert_sql("projects", PROJECT_COLUMNS), rows)
                db.executemany(insert_sql("initialization_steps", STEP_COLUMNS), steps)
                db.execute(DONE_STEPS_SQL[True], (last,))
            db.execute("DROP TABLE bench_done_steps")
            db.execute("COMMIT")
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()

    def size_mb(self) -> float:
        files = [self.path, self.path.with_name(self.path.name + "-wal")]
        return sum(f.stat().st_size for f in files if f.exists()) / 1e6

    def explain(self, sql: str, values: Sequence[Any]) -> QueryPlan:
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        try:
            lines = [r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, list(values))]
        finally:
            db.close()
        # "SCAN t" (with or without "USING … INDEX") walks a whole table or index.
        return QueryPlan(sql, not any(line.startswith("SCAN") for line in lines), lines)

    def drop(self) -> None:
        """The data dir is a temp dir, removed by the caller."""


class PostgresTarget:
    name = "postgres"

    def __init__(self, data_dir: Path, admin_url: str) -> None:
        self.data_dir = data_dir
        self.admin_url = admin_url
        self.database = f"initflow_bench_snapshot_{os.getpid()}"
        self.app_url = admin_url.rsplit("/", 1)[0] + "/" + self.database
        self.server_database_url: str | None = self.app_url
        self.created = False

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    def create(self) -> None:
        asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))
        asyncio.run(self._admin(f"CREATE DATABASE {self.database}"))
        self.created = True
        migrate(self.app_url)

    def insert(self, users: tuple[int, int], projects: tuple[int, int]) -> None:
        asyncio.run(self._insert(users, projects))

    async def _insert(self, users: tuple[int, int], projects: tuple[int, int]) -> None:
        """One transaction, as pg_restore loads: the secondary indexes and unique
        constraints of the two big tables are dropped, the rows copied, then they are
        built again under their own names; ``ANALYZE`` after (what autovacuum would do)."""
        connection = await asyncpg.connect(self.app_url)
        try:
            # The loader's own session skips the foreign-key triggers (one lookup per row);
            # every row references a row it wrote itself.
            await connection.execute("SET session_replication_role = replica")
            await connection.execute("SET maintenance_work_mem = '256MB'")
            async with connection.transaction():
                indexes = await drop_indexes(connection, ("projects", "initialization_steps"))
                await connection.copy_records_to_table(
                    "users", records=user_rows(*users, sqlite=False), columns=USER_COLUMNS
                )
                await connection.execute(DONE_TEMPLATE_SQL)
                await connection.executemany(
                    "INSERT INTO bench_done_steps VALUES"
                    f" ({', '.join(f'${i}' for i in range(1, 15))})",
                    [done_template_row(position) for position in range(STEP_COUNT)],
                )
                for rows, steps in generated(*projects, sqlite=False):
                    await connection.copy_records_to_table(
                        "projects", records=rows, columns=PROJECT_COLUMNS
                    )
                    await connection.copy_records_to_table(
                        "initialization_steps", records=steps, columns=STEP_COLUMNS
                    )
                    active = [row[0] for row in rows if row[7] == ProjectState.ACTIVE.value]
                    await connection.execute(DONE_STEPS_SQL[False], active)
                await connection.execute("DROP TABLE bench_done_steps")
                for statement in indexes:
                    await connection.execute(statement)
            await connection.execute("ANALYZE users, projects, initialization_steps")
        finally:
            await connection.close()

    async def _fetch(self, sql: str, *values: Any) -> list[Any]:
        connection = await asyncpg.connect(self.app_url)
        try:
            return list(await connection.fetch(sql, *values))
        finally:
            await connection.close()

    def size_mb(self) -> float:
        rows = asyncio.run(self._fetch("SELECT pg_database_size(current_database())"))
        return int(rows[0][0]) / 1e6

    def explain(self, sql: str, values: Sequence[Any]) -> QueryPlan:
        lines = [r[0] for r in asyncio.run(self._fetch("EXPLAIN " + sql, *values))]
        return QueryPlan(sql, not any("Seq Scan" in line for line in lines), lines)

    def stats(self) -> dict[str, int]:
        """This database's cumulative counters (transactions, tuples read)."""
        rows = asyncio.run(
            self._fetch(
                "SELECT xact_commit, tup_returned, tup_fetched FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
        )
        return {k: int(v) for k, v in dict(rows[0]).items()}

    def drop(self) -> None:
        if self.created:
            asyncio.run(self._admin(f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)"))


Target = SqliteTarget | PostgresTarget

_INDEXES = """
SELECT i.indexrelid::regclass::text AS index, c.conname, pg_get_indexdef(i.indexrelid) AS def,
       pg_get_constraintdef(c.oid) AS constraint_def
FROM pg_index AS i LEFT JOIN pg_constraint AS c ON c.conindid = i.indexrelid
WHERE i.indrelid = $1::regclass AND NOT i.indisprimary
"""


async def drop_indexes(connection: Any, tables: Sequence[str]) -> list[str]:
    """Drop the tables' indexes but the primary keys; returns the statements making them."""
    statements = []
    for table in tables:
        for index in await connection.fetch(_INDEXES, table):
            if index["conname"]:
                name, definition = index["conname"], index["constraint_def"]
                await connection.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
                statements.append(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
            else:
                await connection.execute(f"DROP INDEX {index['index']}")
                statements.append(index["def"])
    return statements


def insert_sql(table: str, columns: Sequence[str]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    return f"INSERT INTO {table} ({names}) VALUES ({', '.join('?' for _ in columns)})"


# --- read it back through the app's own code; capture and EXPLAIN its SQL ----------------


class SqlCapture(logging.Handler):
    """Tortoise logs every statement as ``"%s: %s", query, values`` on tortoise.db_client."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.queries: list[tuple[str, list[Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args
        if isinstance(args, tuple) and len(args) == 2 and isinstance(args[0], str):
            values = args[1]
            self.queries.append((args[0], list(values) if isinstance(values, list) else []))


@contextlib.contextmanager
def capturing() -> Iterator[SqlCapture]:
    logger = logging.getLogger("tortoise.db_client")
    capture, level, propagate = SqlCapture(), logger.level, logger.propagate
    logger.addHandler(capture)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield capture
    finally:
        logger.removeHandler(capture)
        logger.setLevel(level)
        logger.propagate = propagate


def sample_plans(projects: int, rng: random.Random) -> list[Plan]:
    """One project of each state (where the table has one) and 20 random ones."""
    chosen: dict[ProjectState, Plan] = {}
    for _ in range(min(projects, 20_000)):
        p = plan(rng.randrange(projects))
        chosen.setdefault(p.state, p)
    return [*chosen.values(), *(plan(rng.randrange(projects)) for _ in range(20))]


def view_fields(view: StatusView) -> list[Row]:
    head: Row = (view.status.value, view.seq, view.error, view.updated_at)
    steps = [
        (s.name, s.position, s.status.value, s.progress, s.message, s.attempts, s.started_at,
         s.completed_at, s.error_code, s.error_message, s.next_attempt_at, s.last_progress_at)
        for s in view.steps
    ]  # fmt: skip
    return [head, *steps]


def expected_fields(p: Plan) -> list[Row]:
    """What load_status must return: the Postgres form (real datetimes) of the same rows."""
    clock = Clock(p, sqlite=False)
    project = dict(zip(PROJECT_COLUMNS, project_row(p, clock), strict=True))
    head: Row = (p.state.value, project["last_seq"], project["initialization_error"])
    head += (project["updated_at"],)
    steps, texts = [], completed_texts(p)
    for position in range(STEP_COUNT):
        row = dict(zip(STEP_COLUMNS, step_row(p, position, clock, texts), strict=True))
        steps.append(tuple(row[c] for c in (*STEP_COLUMNS[1:11], "next_attempt_at", "updated_at")))
    return [head, *steps]


async def check_orm(p: Plan) -> None:
    """The other columns decode through the ORM (JSON, enums, datetimes, the FK)."""
    project = await Project.get(id=UUID(p.id))
    expected_created = base_time(p).replace(microsecond=p.micro)
    template, parameters = TEMPLATES[p.number % len(TEMPLATES)]
    owner = project.owner_id  # type: ignore[attr-defined]
    got = (project.status, str(owner), project.created_at, project.template,
           project.parameters, project.environment_names)  # fmt: skip
    want = (p.state, user_id(p.owner), expected_created, template, json.loads(parameters),
            json.loads(ENVIRONMENTS))  # fmt: skip
    if got != want:
        raise RuntimeError(f"project {p.number} reads back through the ORM as {got}, not {want}")
    steps = await InitializationStep.filter(project_id=UUID(p.id)).order_by("position")
    if not all(isinstance(s.checkpoint, dict) and isinstance(s.status, StepState) for s in steps):
        raise RuntimeError(f"project {p.number}: step rows do not decode through the ORM")


@dataclass
class ReadBack:
    queries: dict[str, tuple[str, list[Any]]]  # name → (SQL, values) as the app sent them
    app_ms: list[float]  # authenticate + load_status in-process, no HTTP nor GraphQL


async def read_back(target: Target, projects: int) -> ReadBack:
    """Check sample rows through the app's code, capture its SQL, time it in-process."""
    database = await open_database(target.app_url, migrate=False)
    captured: dict[str, tuple[str, list[Any]]] = {}
    try:
        for p in sample_plans(projects, random.Random(projects)):
            with capturing() as auth_sql:
                user = await authenticate(user_token(p.owner))
            with capturing() as status_sql:
                view = await load_status(UUID(p.id), owner_id=user.id)
            if str(user.id) != user_id(p.owner):
                raise RuntimeError(f"token of user {p.owner} authenticated {user.id}")
            if view_fields(view) != expected_fields(p):
                raise RuntimeError(
                    f"project {p.number} reads back as\n{view_fields(view)}\n"
                    f"not\n{expected_fields(p)}"
                )
            await check_orm(p)
            captured["token lookup (authenticate)"] = auth_sql.queries[-1]
            captured["snapshot (load_status)"] = status_sql.queries[-1]
        return ReadBack(captured, await time_app(projects))
    finally:
        await database.close()


async def time_app(projects: int) -> list[float]:
    """The two statements of a request through the app's code, for random projects (ms)."""
    rng, timings = random.Random(f"app-{projects}"), []
    for p in [plan(rng.randrange(projects)) for _ in range(APP_SAMPLES)]:
        started = time.perf_counter()
        user = await authenticate(user_token(p.owner))
        await load_status(UUID(p.id), owner_id=user.id)
        timings.append((time.perf_counter() - started) * 1000)
    return timings[APP_SAMPLES // 10 :]  # the first ones warm the pool and caches


def explain_all(target: Target, captured: dict[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    return {name: asdict(target.explain(sql, values)) for name, (sql, values) in captured.items()}


# --- the server and the load ---------------------------------------------------------------


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def serve(target: Target, log_dir: Path, label: str) -> Iterator[str]:
    """``initflow serve --no-runner`` on the populated database; yields its URL."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log_path = log_dir / f"serve-{label}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [INITFLOW, "serve", "--no-runner", "--port", str(port)],
            env=child_env(target.data_dir, target.server_database_url),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + READY_SECONDS
        while not ready(base_url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"initflow serve not ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        yield base_url
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


@dataclass(frozen=True)
class Request:
    body: bytes
    headers: dict[str, str]
    expected: str


def requests_for(projects: int, count: int, rng: random.Random) -> list[Request]:
    """``count`` projectStatus requests, each for a uniformly drawn project, as its owner."""
    result = []
    for _ in range(count):
        p = plan(rng.randrange(projects))
        body = json.dumps({"query": STATUS_QUERY, "variables": {"id": p.id}}).encode()
        headers = {
            "Authorization": f"Bearer {user_token(p.owner)}",
            "Content-Type": "application/json",
        }
        result.append(Request(body, headers, p.state.name))
    return result


async def send(session: aiohttp.ClientSession, url: str, request: Request) -> None:
    async with session.post(url, data=request.body, headers=request.headers) as response:
        payload = await response.json()
    status = (payload.get("data") or {}).get("projectStatus") or {}
    if response.status != 200 or "errors" in payload or status.get("status") != request.expected:
        raise RuntimeError(f"unexpected answer {response.status}: {str(payload)[-1000:]}")


async def timed(session: aiohttp.ClientSession, url: str, request: Request) -> float:
    started = time.perf_counter()
    await send(session, url, request)
    return (time.perf_counter() - started) * 1000


@dataclass
class Load:
    load_average: float  # the machine's 1-minute load average when the load started
    latencies_ms: list[float]
    concurrent_rps: float
    concurrent_latencies_ms: list[float]


async def load(base_url: str, projects: int, args: argparse.Namespace) -> Load:
    rng = random.Random(f"load-{projects}")
    warmup = requests_for(projects, args.warmup, rng)
    sequential = requests_for(projects, args.requests, rng)
    concurrent = requests_for(projects, args.concurrent_requests, rng)
    url = f"{base_url}/graphql"
    load_average = os.getloadavg()[0]
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        for request in warmup:
            await send(session, url, request)
        latencies = [await timed(session, url, request) for request in sequential]
        pending = iter(concurrent)
        under_load: list[float] = []

        async def client() -> None:
            for request in pending:
                under_load.append(await timed(session, url, request))

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(args.concurrency)))
        elapsed = time.perf_counter() - started
    return Load(load_average, latencies, len(concurrent) / elapsed, under_load)


# --- one backend, all sizes ----------------------------------------------------------------


@dataclass
class Result:
    backend: str
    projects: int
    users: int
    step_rows: int
    event_rows: int
    populate_s: float
    populate_total_s: float
    db_mb: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rps_16: float
    app_p50_ms: float
    app_p99_ms: float
    p50_ms_at_16: float
    requests: int
    load_average: float
    explain: dict[str, Any] = field(default_factory=dict)
    db_per_request: dict[str, float] = field(default_factory=dict)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def per_request(before: dict[str, int], after: dict[str, int], requests: int) -> dict[str, float]:
    return {k: round((after[k] - before[k]) / requests, 2) for k in after}


def measure(
    target: Target, projects: int, args: argparse.Namespace
) -> tuple[Load, dict[str, float]]:
    """Postgres: also transactions and tuples read per request, from pg_stat_database
    around the whole server session (the server's sessions flush their counters when they
    end; its start-up adds a handful of statements to the thousands of requests).
    """
    counted = target if isinstance(target, PostgresTarget) and args.db_stats else None
    before = counted.stats() if counted else {}
    with serve(target, target.data_dir, f"{target.name}-{projects}") as base_url:
        figures = asyncio.run(load(base_url, projects, args))
    requests = args.warmup + args.requests + args.concurrent_requests
    reads = per_request(before, counted.stats(), requests) if counted else {}
    return figures, reads


def run_backend(target: Target, sizes: Sequence[int], args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    target.create()
    users_done = projects_done = 0
    total = 0.0
    for size in sizes:
        started = time.perf_counter()
        target.insert((users_done, users_for(size)), (projects_done, size))
        elapsed = time.perf_counter() - started
        total += elapsed
        users_done, projects_done = users_for(size), size
        print(f"  {target.name} {size:>9,} projects: populated in {elapsed:.1f} s", flush=True)
        checked = asyncio.run(read_back(target, size))
        explained = explain_all(target, checked.queries)
        figures, reads = measure(target, size, args)
        lat, conc = figures.latencies_ms, figures.concurrent_latencies_ms
        results.append(
            Result(
                backend=target.name,
                projects=size,
                users=users_done,
                step_rows=size * STEP_COUNT,
                event_rows=0,
                populate_s=round(elapsed, 1),
                populate_total_s=round(total, 1),
                db_mb=round(target.size_mb(), 1),
                p50_ms=round(statistics.median(lat), 2),
                p99_ms=round(pct(lat, 0.99), 2),
                max_ms=round(max(lat), 2),
                rps_16=round(figures.concurrent_rps, 1),
                app_p50_ms=round(statistics.median(checked.app_ms), 3),
                app_p99_ms=round(pct(checked.app_ms, 0.99), 3),
                p50_ms_at_16=round(statistics.median(conc), 2),
                requests=len(lat),
                load_average=round(figures.load_average, 1),
                explain=explained,
                db_per_request=reads,
            )
        )
        print(f"  {format_row(results[-1])}", flush=True)
    return results


# --- output ----------------------------------------------------------------------------------

HEADER = (
    f"{'backend':9} {'projects':>9} {'users':>6} {'steps rows':>10} {'events':>6} "
    f"{'pop s':>6} {'DB MB':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'req/s@16':>8} "
    f"{'app ms':>6} {'load':>5}"
)


def format_row(r: Result) -> str:
    return (
        f"{r.backend:9} {r.projects:>9,} {r.users:>6,} {r.step_rows:>10,} {r.event_rows:>6} "
        f"{r.populate_s:>6.1f} {r.db_mb:>7.0f} {r.p50_ms:>7.2f} {r.p99_ms:>7.2f} "
        f"{r.max_ms:>7.1f} {r.rps_16:>8.0f} {r.app_p50_ms:>6.2f} {r.load_average:>5.1f}"
    )


def print_report(results: list[Result], args: argparse.Namespace, seconds: float) -> None:
    print()
    print(
        f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"SQLite {sqlite3.sqlite_version} (WAL); n={args.requests} sequential after "
        f"{args.warmup} warm-up, {args.concurrent_requests} at concurrency {args.concurrency}"
    )
    print(HEADER)
    for r in results:
        print(format_row(r))
    print("pop s: this size's increment (sizes are built one on the other);")
    print("DB MB: the SQLite file / pg_database_size.")
    print(
        f"app ms: p50 of the request's two statements (authenticate + load_status) through"
        f" the app's code in-process, n={APP_SAMPLES - APP_SAMPLES // 10}: no HTTP, no GraphQL."
    )
    print("load: the machine's 1-minute load average as the requests started (2 cores shared).")
    print()
    print("EXPLAIN of the statements one projectStatus runs (captured from the app):")
    for r in results:
        for name, explained in r.explain.items():
            verdict = "index" if explained["uses_index"] else "FULL SCAN"
            plan_text = " | ".join(line.strip() for line in explained["plan"])
            print(f"  {r.backend:8} {r.projects:>9,}  {name:28} {verdict:9}  {plan_text}")
    reads = [r for r in results if r.db_per_request]
    if reads:
        print("Postgres per projectStatus request (pg_stat_database over the server's life):")
        for r in reads:
            print(f"  {r.projects:>9,} projects: {r.db_per_request}")
    print(f"total bench time: {seconds:.0f} s")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)))
    parser.add_argument("--quick", action="store_true", help="sizes 1000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--requests", type=int, default=1_000, help="sequential, measured")
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--concurrent-requests", type=int, default=1_000)
    parser.add_argument("--postgres-url", default=POSTGRES_ADMIN_URL, help="an admin database")
    parser.add_argument(
        "--no-db-stats",
        dest="db_stats",
        action="store_false",
        help="skip the Postgres per-request transaction and tuple counts",
    )
    args = parser.parse_args(argv)
    sizes = QUICK_SIZES if args.quick else tuple(int(s) for s in args.sizes.split(","))
    args.size_list = sorted(set(sizes))
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backend_list) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backends: {', '.join(sorted(unknown))}")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    results: list[Result] = []
    print(HEADER, flush=True)
    for backend in args.backend_list:
        with tempfile.TemporaryDirectory(prefix=f"bench-snapshot-{backend}-") as tmp:
            target: Target = (
                SqliteTarget(Path(tmp))
                if backend == "sqlite"
                else PostgresTarget(Path(tmp), args.postgres_url)
            )
            try:
                results += run_backend(target, args.size_list, args)
            finally:
                target.drop()
    print_report(results, args, time.perf_counter() - started)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2, default=str))


if __name__ == "__main__":
    main()
