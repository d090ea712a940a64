from __future__ import annotations

from initflow.schema.context import Info
from initflow.schema.types import Template


async def templates(info: Info) -> list[Template]:
    info.context.require_user()
    return [Template.from_spec(t) for t in info.context.services.catalog.list()]
