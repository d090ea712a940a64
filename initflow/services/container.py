"""The services one running instance offers to its API, wired once by the app."""

from __future__ import annotations

from dataclasses import dataclass

from initflow.bus import ProgressBus
from initflow.metrics import Metrics
from initflow.services.initialization import InitializationService
from initflow.services.progress import ProgressStream
from initflow.services.projects import ProjectService
from initflow.services.rate_limits import RateLimiter
from initflow.services.templates import TemplateCatalog
from initflow.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    bus: ProgressBus
    catalog: TemplateCatalog
    projects: ProjectService
    progress: ProgressStream
    initialization: InitializationService
    metrics: Metrics

    @classmethod
    def build(
        cls, settings: Settings, bus: ProgressBus, catalog: TemplateCatalog, metrics: Metrics
    ) -> Services:
        return cls(
            settings=settings,
            bus=bus,
            catalog=catalog,
            projects=ProjectService(
                catalog, bus, RateLimiter(settings.create_rate_per_minute, settings.create_burst)
            ),
            progress=ProgressStream(bus, metrics),
            initialization=InitializationService(bus),
            metrics=metrics,
        )

    def clone_url(self, project_id: str) -> str:
        return f"{self.settings.base_url}/git/{project_id}.git"
