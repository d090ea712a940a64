"""The Project type; its relations load on demand, scoped by the owner check already done."""

from __future__ import annotations

from datetime import datetime

import strawberry

from initflow.models import Project as ProjectRow
from initflow.schema.context import Info
from initflow.schema.types import Environment, ProjectState, ProjectStatus, Repository
from initflow.services.snapshots import load_status


@strawberry.type
class Project:
    id: strawberry.ID
    name: str
    slug: str
    template: str
    status: ProjectState  # type: ignore[valid-type]
    created_at: datetime
    row: strawberry.Private[ProjectRow]

    @classmethod
    def from_row(cls, row: ProjectRow) -> Project:
        return cls(
            id=strawberry.ID(str(row.id)),
            name=row.name,
            slug=row.slug,
            template=row.template,
            status=row.status,
            created_at=row.created_at,
            row=row,
        )

    @strawberry.field
    async def initialization(self, info: Info) -> ProjectStatus:
        view = await load_status(self.row.id)
        return ProjectStatus.from_view(view, info.context.services.settings.stall_after)

    @strawberry.field
    async def environments(self, info: Info) -> list[Environment]:
        rows = await info.context.services.projects.environments(self.row)
        return [Environment(name=r.name) for r in rows]

    @strawberry.field
    async def repository(self, info: Info) -> Repository | None:
        row = await info.context.services.projects.repository(self.row)
        if row is None:
            return None
        return Repository(
            clone_url=info.context.services.clone_url(str(self.row.id)),
            default_branch=row.default_branch,
            head_commit=row.head_commit,
        )
