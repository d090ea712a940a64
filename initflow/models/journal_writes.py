"""The journal's write in plain SQL: the hot path of every state transition.

One commit = a guarded update of the project row, updates of the touched step
rows and one ``progress_events`` row per event. Built through the ORM, the
query building cost more CPU than everything else a transition does, so the
statements are composed here once per shape and cached.

On Postgres the whole write is *one* statement (data-modifying CTEs chained on
the guarded project update): one round trip, atomic by itself, and nothing is
written when the guard does not match. SQLite has no writable CTEs: the same
rows are written by one statement per table inside the caller's transaction,
the guarded update first (it takes the write lock).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

_JSON_COLUMNS = frozenset({"checkpoint", "payload"})

Guard = Mapping[str, Any]
"""Column → the value it must have; ``column__in`` → the values it may have."""
GuardShape = tuple[tuple[str, int], ...]


@dataclass(frozen=True)
class EventRow:
    seq: int
    type: str
    payload_json: str
    created_at: datetime


@dataclass(frozen=True)
class JournalWrite:
    """Everything one journal commit writes, in column form."""

    project_id: UUID
    guard: Guard
    project_columns: Mapping[str, Any]
    step_columns: Mapping[str, Mapping[str, Any]]
    events: Sequence[EventRow]
    updated_at: datetime


def is_postgres(connection: BaseDBAsyncClient) -> bool:
    return bool(connection.capabilities.dialect == "postgres")


async def write_journal(connection: BaseDBAsyncClient, write: JournalWrite) -> bool:
    """Write it all, or nothing if the guard does not match; returns whether it matched.

    On SQLite ``connection`` must be inside a transaction (the caller's).
    """
    if is_postgres(connection):
        return await _write_postgres(connection, write)
    return await _write_sqlite(connection, write)


def _column_value(column: str, value: Any, postgres: bool) -> Any:
    if isinstance(value, Enum):
        return value.value
    if column in _JSON_COLUMNS and not isinstance(value, str):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, UUID) and not postgres:
        return str(value)  # Tortoise stores UUIDs as text on SQLite
    return value


def _guard_shape(guard: Guard) -> GuardShape:
    """Each guarded column with the number of allowed values (0: an equality)."""
    return tuple((c, len(v) if c.endswith("__in") else 0) for c, v in guard.items())


def _project_values(write: JournalWrite, postgres: bool) -> list[Any]:
    values: list[Any] = [write.updated_at]
    values += [_column_value(c, v, postgres) for c, v in write.project_columns.items()]
    values.append(_column_value("id", write.project_id, postgres))
    for column, expected in write.guard.items():
        if column.endswith("__in"):
            allowed = [_column_value(column, v, postgres) for v in expected]
            values += [allowed] if postgres else allowed
        else:
            values.append(_column_value(column, expected, postgres))
    return values


def _project_sql(
    columns: Sequence[str],
    guard: GuardShape,
    mark: Callable[[], str],
    postgres: bool,
) -> str:
    assignments = _assignments(columns, mark)  # first: the values list starts with them
    conditions = [f'"id" = {mark()}']
    for column, size in guard:
        name = column.removesuffix("__in")
        if not column.endswith("__in"):
            conditions.append(f'"{name}" = {mark()}')
        elif postgres:
            conditions.append(f'"{name}" = ANY({mark()}::varchar[])')
        else:
            conditions.append(f'"{name}" IN ({", ".join(mark() for _ in range(size))})')
    return f"UPDATE projects SET {assignments} WHERE {' AND '.join(conditions)}"


def _assignments(columns: Sequence[str], mark: Callable[[], str]) -> str:
    return ", ".join(f'"{c}" = {mark()}' for c in ("updated_at", *columns))


def _step_assignments(write: JournalWrite, postgres: bool) -> list[tuple[str, list[Any]]]:
    """Per touched step: its name and the values of its SET clause, in order."""
    return [
        (name, [write.updated_at, *(_column_value(c, v, postgres) for c, v in columns.items())])
        for name, columns in write.step_columns.items()
    ]


def _event_row(event: EventRow) -> list[Any]:
    return [event.seq, event.type, event.payload_json, event.created_at]


def write_shape(write: JournalWrite) -> tuple[Any, ...]:
    """The statement a write needs; writes of one shape can share one (``write_postgres_batch``)."""
    return (
        tuple(write.project_columns),
        _guard_shape(write.guard),
        tuple(tuple(columns) for columns in write.step_columns.values()),
        len(write.events),
    )


class _Numbered:
    """Postgres placeholders: $1, $2, … in the order they are asked for."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"${self.count}"


@lru_cache(maxsize=512)
def _postgres_sql(shape: tuple[Any, ...], count: int = 1) -> str:
    """``count`` writes of one shape in one statement; returns the ids whose guard matched.

    Each write's step updates and event inserts hang off its own guarded project
    update, so every write is still all-or-nothing, independently of the others.
    """
    project_columns, guard, steps, event_count = shape
    mark = _Numbered()
    parts: list[str] = []
    for i in range(count):
        project = _project_sql(project_columns, guard, mark, True)
        parts.append(f"project_{i} AS ({project} RETURNING id)")
        for j, columns in enumerate(steps):
            parts.append(
                f"step_{i}_{j} AS (UPDATE initialization_steps SET {_assignments(columns, mark)} "
                f"WHERE project_id = (SELECT id FROM project_{i}) AND name = {mark()})"
            )
        if event_count:
            rows = ", ".join(
                f"({mark()}::int, {mark()}::varchar, {mark()}::jsonb, {mark()}::timestamptz)"
                for _ in range(event_count)
            )
            parts.append(
                f"events_{i} AS (INSERT INTO progress_events"
                " (project_id, seq, type, payload, created_at)"
                f" SELECT project_{i}.id, e.* FROM project_{i}, (VALUES {rows}) AS e)"
            )
    matched = " UNION ALL ".join(f"SELECT id FROM project_{i}" for i in range(count))
    return f"WITH {', '.join(parts)} {matched}"


def _postgres_values(write: JournalWrite) -> list[Any]:
    values = _project_values(write, True)
    for name, assignments in _step_assignments(write, True):
        values += [*assignments, name]
    for event in write.events:
        values += _event_row(event)
    return values


async def _write_postgres(connection: BaseDBAsyncClient, write: JournalWrite) -> bool:
    return (await write_postgres_batch(connection, [write]))[0]


async def write_postgres_batch(
    connection: BaseDBAsyncClient, writes: Sequence[JournalWrite]
) -> list[bool]:
    """Several writes of one shape, for distinct projects, in one statement (Postgres only).

    Returns, per write, whether its guard matched. Distinct projects: two updates
    of one row in one statement would not both take effect.
    """
    shape = write_shape(writes[0])
    values = [value for write in writes for value in _postgres_values(write)]
    _, rows = await connection.execute_query(_postgres_sql(shape, len(writes)), values)
    matched = {row["id"] for row in rows}
    return [write.project_id in matched for write in writes]


def _question() -> str:
    return "?"


@lru_cache(maxsize=512)
def _sqlite_sql(shape: tuple[Any, ...]) -> tuple[str, tuple[str, ...], str]:
    project_columns, guard, steps, event_count = shape
    project = _project_sql(project_columns, guard, _question, False)
    step_updates = tuple(
        f"UPDATE initialization_steps SET {_assignments(columns, _question)}"
        " WHERE project_id = ? AND name = ?"
        for columns in steps
    )
    events = "INSERT INTO progress_events (project_id, seq, type, payload, created_at) VALUES " + (
        ", ".join("(?, ?, ?, ?, ?)" for _ in range(event_count))
    )
    return project, step_updates, events


async def _write_sqlite(connection: BaseDBAsyncClient, write: JournalWrite) -> bool:
    project_sql, step_sqls, events_sql = _sqlite_sql(write_shape(write))
    matched, _ = await connection.execute_query(project_sql, _project_values(write, False))
    if matched != 1:
        return False
    project_id = str(write.project_id)
    for sql, (name, assignments) in zip(step_sqls, _step_assignments(write, False), strict=True):
        await connection.execute_query(sql, [*assignments, project_id, name])
    if write.events:
        rows = [[project_id, *_event_row(event)] for event in write.events]
        await connection.execute_query(events_sql, [value for row in rows for value in row])
    return True
