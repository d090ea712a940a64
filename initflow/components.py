"""The parts every server process builds from its settings: the bus and the template catalog.

Apart from ``app.py`` so that ``initflow worker`` does not import the GraphQL
schema and the web server it never uses (a third of its start-up, measured),
which is time a restarted worker's runs wait.
"""

from __future__ import annotations

from initflow.bus import ProgressBus
from initflow.bus.memory import MemoryBus
from initflow.bus.redis import RedisBus
from initflow.services.templates import TemplateCatalog
from initflow.settings import Settings


def build_bus(settings: Settings) -> ProgressBus:
    if settings.redis_url:
        return RedisBus(settings.redis_url, settings.redis_prefix)
    return MemoryBus()


def catalog_for(settings: Settings) -> TemplateCatalog:
    """Built-in templates, overridable by name from ``INITFLOW_TEMPLATE_DIRS``."""
    builtin = TemplateCatalog.builtin()
    return TemplateCatalog([*builtin.roots, *settings.extra_template_dirs])
