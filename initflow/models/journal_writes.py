"""The journal's write in plain SQL: the hot path of every state transition.

One commit = a guarded update of the project row, updates of the touched step
rows and one ``progress_events`` row per event. Built through the ORM, the
query building cost more CPU than everything else a transition does, so the
statements are composed here once per shape and cached.

On Postgres the whole write is *one* statement (data-modifying CTEs chained on
the guarded project update): one round trip, atomic by itself, and nothing is
written when the guard does not match. Its values travel as one array per
column (``unnest``), so the statement text depends on the write's shape only,
never on how many writes share it: Postgres prepares and plans it once per
connection, and executes each table's rows as one set (``bench/runner_throughput.py``:
the earlier one-CTE-per-write form cost Postgres more CPU per write the more
writes shared a statement). SQLite has no writable CTEs: the same rows are
written by one statement per table inside the caller's transaction, the
guarded update first (it takes the write lock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from functools import lru_cache
from typing import Any
from uuid import UUID

import orjson
from tortoise.backends.base.client import BaseDBAsyncClient

_JSON_COLUMNS = frozenset({"checkpoint"})

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
        return orjson.dumps(value).decode()
    if isinstance(value, UUID) and not postgres:
        return str(value)  # Tortoise stores UUIDs as text on SQLite
    return value


def _guard_shape(guard: Guard) -> GuardShape:
    """Each guarded column with the number of allowed values (0: an equality)."""
    return tuple((c, len(v) if c.endswith("__in") else 0) for c, v in guard.items())


def _assignments(columns: Sequence[str], mark: Callable[[], str]) -> str:
    return ", ".join(f'"{c}" = {mark()}' for c in ("updated_at", *columns))


def write_shape(write: JournalWrite) -> tuple[Any, ...]:
    """The statement a write needs; writes of one shape can share one (``write_postgres_batch``)."""
    return (
        tuple(write.project_columns),
        _guard_shape(write.guard),
        tuple(tuple(columns) for columns in write.step_columns.values()),
        len(write.events),
    )


# Postgres types of the columns a journal write may set or guard (arrays need them).
_POSTGRES_TYPES = {
    "id": "uuid",
    "updated_at": "timestamptz",
    "last_seq": "int",
    "progress": "int",
    "status": "varchar",
    "initialization_error": "text",
    "finished_at": "timestamptz",
    "lease_owner": "varchar",
    "lease_token": "int",
    "lease_expires_at": "timestamptz",
    "next_attempt_at": "timestamptz",
    "run_attempts": "int",
    "message": "varchar",
    "attempts": "int",
    "started_at": "timestamptz",
    "completed_at": "timestamptz",
    "error_code": "varchar",
    "error_message": "text",
    "checkpoint": "jsonb",
}


class _Numbered:
    """Postgres placeholders: $1, $2, … in the order they are asked for."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> str:
        self.count += 1
        return f"${self.count}"


def _unnest(columns: Sequence[tuple[str, str]], alias: str, mark: Callable[[], str]) -> str:
    """``unnest`` of one array parameter per (name, type): a row per write (or event)."""
    arrays = ", ".join(f"{mark()}::{kind}[]" for _, kind in columns)
    return f"unnest({arrays}) AS {alias}({', '.join(name for name, _ in columns)})"


def _guard_inputs(guard: GuardShape) -> tuple[list[tuple[str, str]], list[str]]:
    """The guard's input columns (one per allowed value) and its conditions on ``p``."""
    inputs: list[tuple[str, str]] = []
    conditions: list[str] = []
    for k, (column, size) in enumerate(guard):
        name = column.removesuffix("__in")
        kind = _POSTGRES_TYPES[name]
        if not column.endswith("__in"):
            inputs.append((f"g{k}", kind))
            conditions.append(f'p."{name}" = i.g{k}')
            continue
        allowed = [f"g{k}_{m}" for m in range(size)]
        inputs += [(a, kind) for a in allowed]
        conditions.append(
            f'p."{name}" IN ({", ".join(f"i.{a}" for a in allowed)})' if allowed else "FALSE"
        )
    return inputs, conditions


@lru_cache(maxsize=128)
def _postgres_sql(shape: tuple[Any, ...]) -> str:
    """Any number of writes of one shape in one statement; returns the ids whose guard matched.

    Each write's step updates and event inserts are joined to its own guarded
    project update, so every write is still all-or-nothing, independently of the others.
    """
    project_columns, guard, steps, event_count = shape
    mark = _Numbered()
    columns = ("updated_at", *project_columns)
    guard_inputs, conditions = _guard_inputs(guard)
    inputs = [("id", "uuid"), *((f"c{n}", _POSTGRES_TYPES[c]) for n, c in enumerate(columns))]
    settings = ", ".join(f'"{c}" = i.c{n}' for n, c in enumerate(columns))
    parts = [
        f"project AS (UPDATE projects AS p SET {settings}"
        f" FROM {_unnest([*inputs, *guard_inputs], 'i', mark)}"
        f" WHERE p.id = i.id AND {' AND '.join(conditions)} RETURNING p.id)"
    ]
    for j, step_columns in enumerate(steps):
        names = ("updated_at", *step_columns)
        rows = [("project_id", "uuid"), ("name", "varchar")]
        rows += [(f"c{n}", _POSTGRES_TYPES[c]) for n, c in enumerate(names)]
        settings = ", ".join(f'"{c}" = v.c{n}' for n, c in enumerate(names))
        parts.append(
            f"step_{j} AS (UPDATE initialization_steps AS s SET {settings}"
            f" FROM {_unnest(rows, 'v', mark)}"
            " WHERE s.project_id = v.project_id AND s.name = v.name"
            " AND v.project_id IN (SELECT id FROM project))"
        )
    if event_count:
        rows = [
            ("project_id", "uuid"),
            ("seq", "int"),
            ("type", "varchar"),
            ("payload", "text"),
            ("created_at", "timestamptz"),
        ]
        parts.append(
            "events AS (INSERT INTO progress_events (project_id, seq, type, payload, created_at)"
            f" SELECT e.* FROM {_unnest(rows, 'e', mark)}"
            " WHERE e.project_id IN (SELECT id FROM project))"
        )
    return f"WITH {', '.join(parts)} SELECT id FROM project"


def _postgres_arrays(shape: tuple[Any, ...], writes: Sequence[JournalWrite]) -> list[list[Any]]:
    """The statement's array parameters, in the order ``_postgres_sql`` numbers them."""
    project_columns, guard, steps, _ = shape
    arrays: list[list[Any]] = [[w.project_id for w in writes], [w.updated_at for w in writes]]
    arrays += [
        [_column_value(c, w.project_columns[c], True) for w in writes] for c in project_columns
    ]
    for column, size in guard:
        if column.endswith("__in"):
            allowed = [list(w.guard[column]) for w in writes]
            arrays += [[_column_value(column, a[m], True) for a in allowed] for m in range(size)]
        else:
            arrays.append([_column_value(column, w.guard[column], True) for w in writes])
    step_items = [list(w.step_columns.items()) for w in writes]
    for j, step_columns in enumerate(steps):
        touched = [items[j] for items in step_items]
        arrays.append([w.project_id for w in writes])
        arrays.append([name for name, _ in touched])
        arrays.append([w.updated_at for w in writes])
        arrays += [
            [_column_value(c, values[c], True) for _, values in touched] for c in step_columns
        ]
    events = [(w.project_id, e) for w in writes for e in w.events]
    if events:
        arrays.append([project_id for project_id, _ in events])
        arrays.append([e.seq for _, e in events])
        arrays.append([e.type for _, e in events])
        arrays.append([e.payload_json for _, e in events])
        arrays.append([e.created_at for _, e in events])
    return arrays


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
    _, rows = await connection.execute_query(_postgres_sql(shape), _postgres_arrays(shape, writes))
    matched = {row["id"] for row in rows}
    return [write.project_id in matched for write in writes]


# SQLite: one statement per table, in the caller's transaction.


def _project_values(write: JournalWrite) -> list[Any]:
    values: list[Any] = [write.updated_at]
    values += [_column_value(c, v, False) for c, v in write.project_columns.items()]
    values.append(str(write.project_id))
    for column, expected in write.guard.items():
        if column.endswith("__in"):
            values += [_column_value(column, v, False) for v in expected]
        else:
            values.append(_column_value(column, expected, False))
    return values


def _project_sql(columns: Sequence[str], guard: GuardShape) -> str:
    assignments = _assignments(columns, _question)  # first: the values list starts with them
    conditions = ['"id" = ?']
    for column, size in guard:
        name = column.removesuffix("__in")
        if column.endswith("__in"):
            conditions.append(f'"{name}" IN ({", ".join("?" for _ in range(size))})')
        else:
            conditions.append(f'"{name}" = ?')
    return f"UPDATE projects SET {assignments} WHERE {' AND '.join(conditions)}"


def _step_assignments(write: JournalWrite) -> list[tuple[str, list[Any]]]:
    """Per touched step: its name and the values of its SET clause, in order."""
    return [
        (name, [write.updated_at, *(_column_value(c, v, False) for c, v in columns.items())])
        for name, columns in write.step_columns.items()
    ]


def _question() -> str:
    return "?"


@lru_cache(maxsize=512)
def _sqlite_sql(shape: tuple[Any, ...]) -> tuple[str, tuple[str, ...], str]:
    project_columns, guard, steps, event_count = shape
    project = _project_sql(project_columns, guard)
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
    matched, _ = await connection.execute_query(project_sql, _project_values(write))
    if matched != 1:
        return False
    project_id = str(write.project_id)
    for sql, (name, assignments) in zip(step_sqls, _step_assignments(write), strict=True):
        await connection.execute_query(sql, [*assignments, project_id, name])
    if write.events:
        rows = [[project_id, e.seq, e.type, e.payload_json, e.created_at] for e in write.events]
        await connection.execute_query(events_sql, [value for row in rows for value in row])
    return True
