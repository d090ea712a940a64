"""The migrations produce exactly the schema the models describe (indexes included)."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from tortoise import Tortoise
from tortoise.migrations.api import migrate as tortoise_migrate
from tortoise.migrations.autodetector import MigrationAutodetector

from initflow.db import apply_migrations, open_database, tortoise_config
from initflow.models import ProgressEventRecord
from initflow.services.progress import read_events
from tests.conftest import postgres_admin, postgres_url


def sqlite_schema(path: Path) -> dict[str, Any]:
    """Tables with their columns, and every index with its columns and uniqueness."""
    connection = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in connection.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'tortoise_migrations' ORDER BY name"
            )
        ]
        schema: dict[str, Any] = {}
        for table in tables:
            columns = [
                (name, kind.upper(), notnull, default, pk)
                for _, name, kind, notnull, default, pk in connection.execute(
                    f"PRAGMA table_info('{table}')"
                )
            ]
            indexes = set()
            for _, index_name, unique, _, _ in connection.execute(f"PRAGMA index_list('{table}')"):
                cols = tuple(
                    str(r[2]) for r in connection.execute(f"PRAGMA index_info('{index_name}')")
                )
                indexes.add((cols, unique))
            foreign_keys = sorted(
                (r[2], r[3], r[4], r[6])
                for r in connection.execute(f"PRAGMA foreign_key_list('{table}')")
            )
            schema[table] = {
                "columns": sorted(columns),
                "indexes": sorted(indexes),
                "foreign_keys": foreign_keys,
            }
        return schema
    finally:
        connection.close()


async def test_migrations_produce_exactly_the_schema_of_the_models(tmp_path: Path) -> None:
    migrated = tmp_path / "migrated.sqlite3"
    generated = tmp_path / "generated.sqlite3"
    await apply_migrations(f"sqlite://{migrated}")
    await Tortoise.close_connections()
    database = await open_database(f"sqlite://{generated}", migrate=False)
    try:
        await Tortoise.generate_schemas()
    finally:
        await database.close()
    assert sqlite_schema(migrated) == sqlite_schema(generated)
    assert "projects" in sqlite_schema(migrated)


async def test_models_have_no_changes_missing_from_the_migrations(tmp_path: Path) -> None:
    config = tortoise_config(f"sqlite://{tmp_path / 'x.sqlite3'}")
    context = await Tortoise.init(config=config)
    try:
        detector = MigrationAutodetector(context.apps, config["apps"])
        assert await detector.changes() == []
    finally:
        await context.close_connections()


async def test_migrating_twice_is_harmless_and_enables_wal(tmp_path: Path) -> None:
    path = tmp_path / "twice.sqlite3"
    await apply_migrations(f"sqlite://{path}")
    await apply_migrations(f"sqlite://{path}")
    await Tortoise.close_connections()
    database = await open_database(f"sqlite://{path}", migrate=False)
    try:
        connection = Tortoise.get_connection("sqlite")
        _, rows = await connection.execute_query("PRAGMA journal_mode")
        assert rows[0][0].lower() == "wal"
        _, rows = await connection.execute_query("PRAGMA foreign_keys")
        assert rows[0][0] == 1
        _, rows = await connection.execute_query("PRAGMA busy_timeout")
        assert rows[0][0] >= 5000
    finally:
        await database.close()


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
async def test_events_logged_before_the_text_payload_migration_replay_after_it(
    dialect: str, tmp_path: Path
) -> None:
    """0004 turns the payload column from JSON into text; old rows keep replaying."""
    database_name = f"initflow_migration_{os.getpid()}"
    if dialect == "postgres":
        await postgres_admin(f"DROP DATABASE IF EXISTS {database_name} WITH (FORCE)")
        await postgres_admin(f"CREATE DATABASE {database_name}")
        url = postgres_url(database_name)
    else:
        url = f"sqlite://{tmp_path / 'before.sqlite3'}"
    try:
        config = tortoise_config(url, transaction_idle_timeout=None)
        await tortoise_migrate(config=config, target="models.0003_step_next_attempt_at")
        await Tortoise.close_connections()
        project_id = uuid4()
        database = await open_database(url, migrate=False)
        try:
            payload = await _log_one_event_the_old_way(dialect, project_id)
        finally:
            await database.close()
        await apply_migrations(url)
        await Tortoise.close_connections()
        database = await open_database(url, migrate=False)
        try:
            [event] = await read_events(project_id, 0)
        finally:
            await database.close()
        assert event.type.value == payload["type"] and event.seq == 1
        assert event.status.to_json() == payload["status"]
    finally:
        if dialect == "postgres":
            await postgres_admin(f"DROP DATABASE IF EXISTS {database_name} WITH (FORCE)")


async def _log_one_event_the_old_way(dialect: str, project_id: UUID) -> dict[str, Any]:
    """A user, a project and one event row, written as schema 0003 stored them."""
    connection = ProgressEventRecord._meta.db
    now = datetime.now(UTC)
    user_id = uuid4()
    status = {
        "projectId": str(project_id),
        "status": "initializing",
        "progress": 0,
        "error": None,
        "seq": 1,
        "updatedAt": now.isoformat(),
        "steps": [],
    }
    payload = {"type": "STEP_STARTED", "at": now.isoformat(), "step": None, "status": status}
    ids: list[Any] = (
        [user_id, project_id] if dialect == "postgres" else [str(user_id), str(project_id)]
    )
    rows: list[tuple[str, list[Any]]] = [
        (
            "INSERT INTO users (id, name, token_hash, is_admin, created_at)"
            " VALUES (?, 'old', 'h', ?, ?)",
            [ids[0], False, now],
        ),
        (
            "INSERT INTO projects (id, name, slug, template, parameters, environment_names,"
            " status, progress, last_seq, lease_token, run_attempts, created_at, updated_at,"
            " owner_id) VALUES (?, 'Old', 'old', 'static-site', '{}', '[]', 'initializing',"
            " 0, 1, 0, 0, ?, ?, ?)",
            [ids[1], now, now, ids[0]],
        ),
        (
            "INSERT INTO progress_events (project_id, seq, type, payload, created_at)"
            " VALUES (?, 1, 'STEP_STARTED', ?, ?)",
            [ids[1], json.dumps(payload), now],
        ),
    ]
    for template, values in rows:
        sql = template
        if dialect == "postgres":
            for number in range(1, template.count("?") + 1):
                sql = sql.replace("?", f"${number}", 1)
        await connection.execute_query(sql, values)
    return payload
