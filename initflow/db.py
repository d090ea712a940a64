"""Open and close the database, tune SQLite, apply migrations.

Tortoise 1.x keeps its state in a context object; we keep the one ``init``
returns and close exactly that (closing the global one closes nothing and
leaves SQLite's worker thread alive).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tortoise import Tortoise
from tortoise.backends.base.config_generator import expand_db_url
from tortoise.context import TortoiseContext
from tortoise.migrations.api import migrate as tortoise_migrate

from initflow.errors import ConfigurationError

MODELS_MODULE = "initflow.models"
MIGRATIONS_MODULE = "initflow.models.migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
CLOSE_TIMEOUT = 10.0

log = logging.getLogger("initflow.db")


def is_sqlite(database_url: str) -> bool:
    return database_url.startswith("sqlite:")


async def _keep_session(_connection: Any) -> None:
    """Pool check-in without asyncpg's RESET ALL round trip: we never change session state."""


def _postgres_config(url: str, transaction_idle_timeout: float | None) -> dict[str, Any]:
    """A pool whose sessions cannot hold a project row hostage.

    A runner frozen (SIGSTOP, VM pause, partition) between the guarded UPDATE
    of its project row and COMMIT keeps the row locked, and the claim's
    ``SKIP LOCKED`` would skip that run forever. The server ends such a session
    after ``idle_in_transaction_session_timeout`` (releasing the lock; the frozen
    runner's commit then fails), and TCP keepalives notice a vanished peer. A
    runner frozen *while sending* a statement leaves its backend ``active``
    (waiting to read the rest), which the idle timeout does not cover:
    ``statement_timeout`` (same bound) cancels it and its transaction.
    """
    config = expand_db_url(url)
    credentials = config["credentials"]
    credentials.setdefault("minsize", 1)
    credentials.setdefault("maxsize", 10)
    settings = {
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }
    if transaction_idle_timeout is not None:  # None: migrations, which may run long
        bound = str(int(transaction_idle_timeout * 1000))
        settings.update(idle_in_transaction_session_timeout=bound, statement_timeout=bound)
    credentials["server_settings"] = settings
    credentials["reset"] = _keep_session
    return config


def connection_config(
    database_url: str, transaction_idle_timeout: float | None = 10.0
) -> dict[str, Any] | str:
    """SQLite gets WAL, a busy timeout and foreign keys; Postgres a guarded pool."""
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
        return _postgres_config("postgres" + database_url[len(scheme) :], transaction_idle_timeout)
    raise ConfigurationError(
        f"DATABASE_URL must start with sqlite:// or postgres://, got scheme {scheme!r}"
    )


def tortoise_config(
    database_url: str, transaction_idle_timeout: float | None = 10.0
) -> dict[str, Any]:
    # One connection name per backend: Tortoise caches SQL per connection name.
    name = "sqlite" if is_sqlite(database_url) else "postgres"
    return {
        "connections": {name: connection_config(database_url, transaction_idle_timeout)},
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
    await tortoise_migrate(config=tortoise_config(database_url, transaction_idle_timeout=None))


@dataclass
class Database:
    url: str
    context: TortoiseContext

    @property
    def is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    async def close(self) -> None:
        """Close gracefully, but never hang a shutdown on a connection stuck mid-query."""
        clients = list(self.context.connections.all()) if self.context.inited else []
        try:
            await asyncio.wait_for(self.context.close_connections(), CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning(
                "database connections did not close in %ss; terminating them", CLOSE_TIMEOUT
            )
            for client in clients:
                pool = getattr(client, "_pool", None)
                if pool is not None:
                    pool.terminate()


async def open_database(
    database_url: str, *, migrate: bool, transaction_idle_timeout: float = 10.0
) -> Database:
    """``transaction_idle_timeout``: the lease TTL (a frozen runner's lock ends with its lease)."""
    if migrate:
        await apply_migrations(database_url)
    context = await Tortoise.init(
        config=tortoise_config(database_url, transaction_idle_timeout),
        _enable_global_fallback=True,
    )
    if is_sqlite(database_url):
        # Connect now: a query or transaction whose task is cancelled while Tortoise
        # connects lazily would keep the connection's lock (models/transactions.py).
        await context.connections.get("sqlite").create_connection(with_db=True)
    return Database(url=database_url, context=context)


# For `tortoise -c initflow.db.MIGRATIONS_CONFIG makemigrations` (developers only).
MIGRATIONS_CONFIG = tortoise_config("sqlite:///tmp/initflow-makemigrations.sqlite3")
