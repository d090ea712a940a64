from __future__ import annotations

import strawberry

from initflow.errors import NotFound
from initflow.schema.context import Info
from initflow.schema.project import Project


async def project(info: Info, id: strawberry.ID) -> Project | None:
    """Nullable by contract: a missing (or not-yours) project is ``null``."""
    user = info.context.require_user()
    try:
        row = await info.context.services.projects.get(user, id)
    except NotFound:
        return None
    return Project.from_row(row)
