"""The migrations produce exactly the schema the models describe (indexes included)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from tortoise import Tortoise
from tortoise.migrations.autodetector import MigrationAutodetector

from initflow.db import apply_migrations, open_database, tortoise_config


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
