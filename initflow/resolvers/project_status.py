from __future__ import annotations

import strawberry

from initflow.schema.context import Info
from initflow.schema.types import ProjectStatus
from initflow.services.projects import parse_project_id
from initflow.services.snapshots import load_status


async def project_status(info: Info, project_id: strawberry.ID) -> ProjectStatus:
    user = info.context.require_user()
    view = await load_status(parse_project_id(project_id), owner_id=user.id)
    return ProjectStatus.from_view(view, info.context.services.settings.stall_after)
