"""Read an initialization's persisted status: the truth a refreshed client sees."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

from tortoise.transactions import in_transaction

from initflow.errors import NotFound
from initflow.models import InitializationStep, Project
from initflow.status import StatusView, StepView


def step_view(row: InitializationStep) -> StepView:
    return StepView(
        name=row.name,
        position=row.position,
        status=row.status,
        progress=row.progress,
        message=row.message,
        attempts=row.attempts,
        started_at=row.started_at,
        completed_at=row.completed_at,
        error_code=row.error_code,
        error_message=row.error_message,
        last_progress_at=row.updated_at,
        next_attempt_at=row.next_attempt_at,
    )


def status_from_rows(project: Project, steps: Sequence[InitializationStep]) -> StatusView:
    return StatusView(
        project_id=str(project.id),
        status=project.status,
        steps=tuple(step_view(s) for s in sorted(steps, key=lambda s: s.position)),
        error=project.initialization_error,
        seq=project.last_seq,
        updated_at=project.updated_at,
    )


async def load_status(project_id: UUID, owner_id: UUID | None = None) -> StatusView:
    """The project's status; ``owner_id`` restricts it to that owner's projects.

    The project row and its steps are read in one transaction, so ``seq`` and
    the steps describe the same moment.
    """
    async with in_transaction() as connection:
        query = Project.filter(id=project_id)
        if owner_id is not None:
            query = query.filter(owner_id=owner_id)
        project = await query.using_db(connection).first()
        if project is None:
            raise NotFound("Project not found")
        steps = await InitializationStep.filter(project_id=project_id).using_db(connection)
    return status_from_rows(project, steps)
