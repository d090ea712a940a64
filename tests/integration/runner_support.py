"""Helpers for runner tests: a real database and a project created through the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

from initflow.bus import ProgressBus
from initflow.components import build_bus, catalog_for
from initflow.db import Database, open_database
from initflow.metrics import Metrics
from initflow.models import User
from initflow.runner.registry import StepRegistry
from initflow.runner.steps import default_registry
from initflow.runner.worker import Runner
from initflow.services.auth import create_user
from initflow.services.projects import CreateProjectRequest, ProjectService
from initflow.settings import Settings


@dataclass
class World:
    settings: Settings
    database: Database
    bus: ProgressBus
    projects: ProjectService
    owner: User

    def runner(self, instance_id: str = "runner-a", registry: StepRegistry | None = None) -> Runner:
        return Runner(
            settings=self.settings,
            instance_id=instance_id,
            bus=self.bus,
            registry=registry or default_registry(),
            catalog=catalog_for(self.settings),
            metrics=Metrics(),
        )

    async def create(self, name: str, **fields: object) -> UUID:
        request = CreateProjectRequest(name=name, template="python-service", **fields)  # type: ignore[arg-type]
        project = await self.projects.create(self.owner, request)
        return project.id


@asynccontextmanager
async def world(settings: Settings) -> AsyncIterator[World]:
    database = await open_database(settings.effective_database_url, migrate=True)
    bus = build_bus(settings)
    await bus.start()
    try:
        owner, _ = await create_user("owner")
        yield World(settings, database, bus, ProjectService(catalog_for(settings), bus), owner)
    finally:
        await bus.close()
        await database.close()
