from __future__ import annotations

from initflow import states
from initflow.schema.context import Info
from initflow.schema.project import Project
from initflow.schema.types import PageInfo, ProjectConnection, ProjectEdge
from initflow.services.projects import encode_cursor


async def projects(
    info: Info, first: int = 20, after: str | None = None, status: states.ProjectState | None = None
) -> ProjectConnection:
    user = info.context.require_user()
    page = await info.context.services.projects.page(user, first=first, after=after, status=status)
    edges = [ProjectEdge(cursor=encode_cursor(p), node=Project.from_row(p)) for p in page.projects]
    return ProjectConnection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=page.has_next_page, end_cursor=edges[-1].cursor if edges else None
        ),
        total_count=page.total_count,
    )
