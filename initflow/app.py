"""create_app(settings): wires database, bus, services, runner and routes.

Resource lifetimes are tied to the application (``cleanup_ctx``), in order:
database → bus → runner; they are torn down in reverse, so a stopping runner
can still release its leases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web

from initflow.bus import ProgressBus
from initflow.components import build_bus, catalog_for
from initflow.db import Database, is_sqlite, open_database
from initflow.metrics import Metrics
from initflow.runner.registry import StepRegistry
from initflow.runner.steps import default_registry
from initflow.runner.worker import Runner
from initflow.schema.root import build_schema
from initflow.services.container import Services
from initflow.settings import Settings
from initflow.web.dashboard import dashboard_routes
from initflow.web.git_http import git_routes
from initflow.web.graphiql import setup_playground
from initflow.web.graphql_view import InitflowGraphQLView
from initflow.web.health import health_routes
from initflow.web.metrics import metrics_routes

BUS_CLOSE_TIMEOUT = 10.0
log = logging.getLogger("initflow.app")

DATABASE = web.AppKey("database", Database)
BUS = web.AppKey("bus", ProgressBus)
SERVICES = web.AppKey("services", Services)
RUNNER = web.AppKey("runner", Runner)


def create_app(
    settings: Settings,
    *,
    instance_id: str | None = None,
    registry: StepRegistry | None = None,
    migrate: bool | None = None,
) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    catalog = catalog_for(settings)
    bus = build_bus(settings)
    metrics = Metrics()
    services = Services.build(settings, bus, catalog, metrics)
    app[BUS] = bus
    app[SERVICES] = services

    async def database_ctx(app: web.Application) -> AsyncIterator[None]:
        url = settings.effective_database_url
        should_migrate = is_sqlite(url) if migrate is None else migrate
        database = await open_database(
            url, migrate=should_migrate, transaction_idle_timeout=settings.lease_ttl_seconds
        )
        app[DATABASE] = database
        yield
        await database.close()

    async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
        await bus.start()
        yield
        # Bounded like the runner and the database: a shutdown never hangs on Redis.
        try:
            await asyncio.wait_for(bus.close(), BUS_CLOSE_TIMEOUT)
        except TimeoutError:
            log.warning("the bus did not close in %ss", BUS_CLOSE_TIMEOUT)

    async def runner_ctx(app: web.Application) -> AsyncIterator[None]:
        if not settings.run_runner:
            yield
            return
        runner = Runner(
            settings=settings,
            instance_id=instance_id or settings.resolved_instance_id(),
            bus=bus,
            registry=registry or default_registry(),
            catalog=catalog,
            metrics=metrics,
        )
        app[RUNNER] = runner
        await runner.start()
        yield
        await runner.stop()

    app.cleanup_ctx.extend([database_ctx, bus_ctx, runner_ctx])
    app.router.add_route(
        "*",
        "/graphql",
        InitflowGraphQLView(services, schema=build_schema(introspection=settings.introspection)),
    )
    setup_playground(app, settings.data_dir, enabled=settings.graphql_ide)
    app.router.add_routes(git_routes(settings.repositories_dir))
    app.router.add_routes(
        health_routes(bus, lambda: app[RUNNER].loop_alive if RUNNER in app else None)
    )
    app.router.add_routes(metrics_routes(metrics, settings.stall_after))
    app.router.add_routes(dashboard_routes())
    return app
