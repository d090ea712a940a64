"""The `initflow` command: serve, worker, migrate, users, create, watch."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence

from initflow import __version__
from initflow.errors import InitflowError
from initflow.event_loop import use_fastest_loop
from initflow.logs import configure_logging
from initflow.settings import Settings

# Server-side modules (Strawberry, Tortoise, aiohttp's server) are imported inside the
# commands that need them, so the client commands (`create`, `watch`) start fast.


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    if getattr(args, "host", None):
        overrides["host"] = args.host
    if getattr(args, "port", None):
        overrides["port"] = args.port
    if getattr(args, "no_runner", False):
        overrides["run_runner"] = False
    return settings.with_overrides(**overrides) if overrides else settings


def cmd_serve(args: argparse.Namespace) -> int:
    from aiohttp import web

    from initflow.app import create_app
    from initflow.garbage_collection import freeze_start_up_heap
    from initflow.services.auth import ensure_admin

    settings = _settings(args)
    use_fastest_loop()
    app = create_app(settings)

    async def announce(_: web.Application) -> None:
        token = await ensure_admin()
        print(f"initflow {__version__} serving on {settings.base_url}", flush=True)
        print(f"  GraphQL:  {settings.base_url}/graphql", flush=True)
        print(f"  data dir: {settings.data_dir}", flush=True)
        if token is not None:
            print("  First start: created user 'admin'. Its API token (shown once):", flush=True)
            print(token, flush=True)
        freeze_start_up_heap()

    app.on_startup.append(announce)
    web.run_app(app, host=settings.host, port=settings.port, print=None, access_log=None)
    return 0


async def _worker(settings: Settings, burst: bool) -> None:
    from initflow.components import build_bus, catalog_for
    from initflow.db import is_sqlite, open_database
    from initflow.metrics import Metrics
    from initflow.runner.steps import default_registry
    from initflow.runner.worker import Runner

    url = settings.effective_database_url
    database = await open_database(
        url, migrate=is_sqlite(url), transaction_idle_timeout=settings.lease_ttl_seconds
    )
    bus = build_bus(settings)
    await bus.start()
    runner = Runner(
        settings=settings,
        instance_id=settings.resolved_instance_id(),
        bus=bus,
        registry=default_registry(),
        catalog=catalog_for(settings),
        metrics=Metrics(),
    )
    try:
        if burst:
            await runner.run_until_idle()
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await runner.start()
        print(f"initflow worker {runner.instance_id} running", flush=True)
        await stop.wait()
        await runner.stop()
    finally:
        await bus.close()
        await database.close()


def cmd_worker(args: argparse.Namespace) -> int:
    use_fastest_loop()
    asyncio.run(_worker(_settings(args), args.burst))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    from initflow.db import open_database

    async def migrate(url: str) -> None:
        # Through open_database/close: they also close the connection the migrator
        # opened, whose SQLite worker thread would keep the process alive otherwise.
        database = await open_database(url, migrate=True)
        await database.close()

    asyncio.run(migrate(_settings(args).effective_database_url))
    print("migrations applied", flush=True)
    return 0


async def _create_user(settings: Settings, name: str, admin: bool) -> str:
    from initflow.db import is_sqlite, open_database
    from initflow.services.auth import create_user

    url = settings.effective_database_url
    database = await open_database(url, migrate=is_sqlite(url))
    try:
        _, token = await create_user(name, admin=admin)
    finally:
        await database.close()
    return token


def cmd_users_create(args: argparse.Namespace) -> int:
    token = asyncio.run(_create_user(_settings(args), args.name, args.admin))
    print(f"created user {args.name!r}; API token (shown once):", flush=True)
    print(token, flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="initflow",
        description="Create projects from templates with durable, observable initialization.",
        epilog="Configuration comes from environment variables; see the README.",
    )
    parser.add_argument("--version", action="version", version=f"initflow {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="API, dashboard and runner in one process")
    serve.add_argument("--host", help="bind address (INITFLOW_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (INITFLOW_PORT, default 8000)")
    serve.add_argument(
        "--no-runner",
        action="store_true",
        help="serve the API only; leave execution to workers (INITFLOW_RUNNER=0)",
    )
    serve.set_defaults(func=cmd_serve)

    worker = commands.add_parser("worker", help="runner only (no HTTP)")
    worker.add_argument("--burst", action="store_true", help="run until idle, then exit")
    worker.set_defaults(func=cmd_worker)

    migrate = commands.add_parser("migrate", help="apply database migrations")
    migrate.set_defaults(func=cmd_migrate)

    users = commands.add_parser("users", help="manage users").add_subparsers(
        dest="users_command", required=True
    )
    create = users.add_parser("create", help="create a user and print its API token last")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true")
    create.set_defaults(func=cmd_users_create)

    from initflow.client.commands import add_client_commands

    add_client_commands(commands)

    from initflow.assets import add_graphiql_commands

    add_graphiql_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(os.environ.get("INITFLOW_LOG_FORMAT", "text"))
    try:
        code: int = args.func(args)
    except InitflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
