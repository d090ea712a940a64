"""Open and close the database, tune SQLite, apply migrations.

Tortoise 1.x keeps its state in a context object; we keep the one ``init``
returns and close exactly that (closing the global one closes nothing and
leaves SQLite's worker thread alive).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tortoise import Tortoise
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as tortoise_migrate

from initflow.errors import ConfigurationError

MODELS_MODULE = "initflow.models"
MIGRATIONS_MODULE = "initflow.models.migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite:")


def connection_config(database_url: str) -> dict[str, Any] | str:
    """SQLite gets WAL, a busy timeout and foreign keys; Postgres a small pool."""
    scheme = urlsplit(database_url).scheme
    if scheme == "sqlite":
        path = database_url.removeprefix("sqlite://")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "engine": "tortoise.backends.sqlite",
            "credentials": {
                "file_path": path,
                "journal_mode": "WAL",
                "busy_timeout": SQLITE_BUSY_TIMEOUT_MS,
                "foreign_keys": "ON",
                "synchronous": "NORMAL",
            },
        }
    if scheme in ("postgres", "postgresql", "asyncpg"):
        url = "postgres" + database_url[len(scheme) :]
        separator = "&" if "?" in url else "?"
        if "maxsize" not in url:
            url += f"{separator}minsize=1&maxsize=10"
        return url
    raise ConfigurationError(
        f"DATABASE_URL must start with sqlite:// or postgres://, got scheme {scheme!r}"
    )


def tortoise_config(database_url: str) -> dict[str, Any]:
    # One connection name per backend: Tortoise caches SQL per connection name.
    name = "sqlite" if is_sqlite(database_url) else "postgres"
    return {
        "connections": {name: connection_config(database_url)},
        "apps": {
            "models": {
                "models": [MODELS_MODULE],
                "default_connection": name,
                "migrations": MIGRATIONS_MODULE,
            }
        },
        "use_tz": True,
        "timezone": "UTC",
    }


async def apply_migrations(database_url: str) -> None:
    """Bring the schema to the latest migration (idempotent)."""
    await tortoise_migrate(config=tortoise_config(database_url))


@dataclass
class Database:
    url: str
    context: TortoiseContext

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def close(self) -> None:
        await self.context.close_connections()


async def open_database(database_url: str, *, migrate: bool) -> Database:
    if migrate:
        await apply_migrations(database_url)
    context = await Tortoise.init(
        config=tortoise_config(database_url), _enable_global_fallback=True
    )
    return Database(url=database_url, context=context)


# For `tortoise -c initflow.db.MIGRATIONS_CONFIG makemigrations` (developers only).
MIGRATIONS_CONFIG = tortoise_config("sqlite:///tmp/initflow-makemigrations.sqlite3")
