"""Read an initialization's persisted status: the truth a refreshed client sees.

One statement reads the project row and its steps, so ``seq`` and the steps
describe the same moment without a transaction. It is plain SQL: this read
starts every run, every stream and every ``projectStatus``, and the ORM's
query building and model instances cost more than the query itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from initflow.errors import NotFound
from initflow.models import Project
from initflow.models.journal_writes import is_postgres
from initflow.states import ProjectState, StepState
from initflow.status import StatusView, StepView

_STATUS_SQL = """
SELECT {run_columns}p.status AS project_status, p.initialization_error, p.last_seq,
       p.updated_at AS project_updated_at,
       s.name, s.position, s.status, s.progress, s.message, s.attempts, s.started_at,
       s.completed_at, s.error_code, s.error_message, s.updated_at, s.next_attempt_at
FROM projects AS p
JOIN initialization_steps AS s ON s.project_id = p.id
WHERE p.id = {project} {owner}
ORDER BY s.position
"""
_RUN_COLUMNS = (
    "p.owner_id, p.name AS project_name, p.slug, p.template, p.parameters, "
    "p.environment_names, p.created_at AS project_created_at, p.run_attempts, "
)
_BY_ID = {
    "postgres": _STATUS_SQL.format(run_columns="", project="$1", owner=""),
    "sqlite": _STATUS_SQL.format(run_columns="", project="?", owner=""),
}
_BY_ID_AND_OWNER = {
    "postgres": _STATUS_SQL.format(run_columns="", project="$1", owner="AND p.owner_id = $2"),
    "sqlite": _STATUS_SQL.format(run_columns="", project="?", owner="AND p.owner_id = ?"),
}
_RUN_SQL = {
    "postgres": _STATUS_SQL.format(run_columns=_RUN_COLUMNS, project="$1", owner=""),
    "sqlite": _STATUS_SQL.format(run_columns=_RUN_COLUMNS, project="?", owner=""),
}


@dataclass(frozen=True)
class ProjectFacts:
    """The inputs of a run, read once from the project row."""

    id: UUID
    owner_id: UUID
    name: str
    slug: str
    template: str
    parameters: Mapping[str, Any]
    environments: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True)
class RunStart:
    """What an executor reads before its first step: the status and the run's inputs."""

    status: StatusView
    facts: ProjectFacts
    run_attempts: int


def _timestamp(value: Any) -> datetime | None:
    """Postgres returns datetimes; SQLite the text Tortoise wrote, parsed as Tortoise does."""
    if value is None or isinstance(value, datetime):
        return value
    return Project._meta.fields_map["updated_at"].to_python_value(value)  # type: ignore[no-any-return]


def _step(row: Mapping[str, Any]) -> StepView:
    return StepView(
        name=row["name"],
        position=row["position"],
        status=StepState(row["status"]),
        progress=row["progress"],
        message=row["message"],
        attempts=row["attempts"],
        started_at=_timestamp(row["started_at"]),
        completed_at=_timestamp(row["completed_at"]),
        error_code=row["error_code"],
        error_message=row["error_message"],
        last_progress_at=_timestamp(row["updated_at"]),
        next_attempt_at=_timestamp(row["next_attempt_at"]),
    )


def _status(project_id: UUID, rows: Sequence[Mapping[str, Any]]) -> StatusView:
    first = rows[0]
    updated_at = _timestamp(first["project_updated_at"])
    assert updated_at is not None
    return StatusView(
        project_id=str(project_id),
        status=ProjectState(first["project_status"]),
        steps=tuple(_step(row) for row in rows),
        error=first["initialization_error"],
        seq=first["last_seq"],
        updated_at=updated_at,
    )


async def _rows(sql: Mapping[str, str], *values: UUID) -> Sequence[Mapping[str, Any]]:
    connection = Project._meta.db
    dialect = "postgres" if is_postgres(connection) else "sqlite"
    parameters: list[Any] = list(values) if dialect == "postgres" else [str(v) for v in values]
    _, rows = await connection.execute_query(sql[dialect], parameters)
    if not rows:
        raise NotFound("Project not found")
    return rows


async def load_status(project_id: UUID, owner_id: UUID | None = None) -> StatusView:
    """The project's status; ``owner_id`` restricts it to that owner's projects."""
    if owner_id is None:
        return _status(project_id, await _rows(_BY_ID, project_id))
    return _status(project_id, await _rows(_BY_ID_AND_OWNER, project_id, owner_id))


async def load_run_start(project_id: UUID) -> RunStart:
    """The status and the run's inputs in one read (every run starts with it)."""
    rows = await _rows(_RUN_SQL, project_id)
    first = rows[0]
    created_at = _timestamp(first["project_created_at"])
    assert created_at is not None
    facts = ProjectFacts(
        id=project_id,
        owner_id=UUID(str(first["owner_id"])),
        name=first["project_name"],
        slug=first["slug"],
        template=first["template"],
        parameters=_json_column("parameters", first["parameters"]),
        environments=tuple(_json_column("environment_names", first["environment_names"])),
        created_at=created_at,
    )
    return RunStart(_status(project_id, rows), facts, first["run_attempts"])


def _json_column(name: str, value: Any) -> Any:
    """JSON as the driver returns it (text on both dialects here), parsed as Tortoise does."""
    return Project._meta.fields_map[name].to_python_value(value)
