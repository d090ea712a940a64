"""Projects: creation (with every step row, in one transaction) and owner-scoped reads.

A project that is not the caller's is reported exactly like a missing one.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.errors import InvalidInput, NotFound, Problem
from initflow.models import (
    AuditEntry,
    Environment,
    InitializationStep,
    Project,
    Repository,
    User,
)
from initflow.models.transactions import transaction
from initflow.services.input_rules import (
    check_environments,
    check_idempotency_key,
    check_project_name,
)
from initflow.services.rate_limits import RateLimiter
from initflow.services.templates import TemplateCatalog, validate_parameters
from initflow.states import ProjectState
from initflow.step_plan import STEP_PLAN

PAGE_MAX = 100


@dataclass(frozen=True)
class CreateProjectRequest:
    name: str
    template: str
    parameters: Mapping[str, Any] | None = None
    environments: Sequence[str] | None = None
    idempotency_key: str | None = None


@dataclass(frozen=True)
class ProjectPage:
    projects: list[Project]
    has_next_page: bool
    total_count: int


def parse_project_id(raw: str) -> UUID:
    """Opaque ids that are not ours are simply not found."""
    try:
        return UUID(raw)
    except (ValueError, TypeError, AttributeError) as exc:
        raise NotFound("Project not found") from exc


class ProjectService:
    def __init__(
        self, catalog: TemplateCatalog, bus: ProgressBus, limiter: RateLimiter | None = None
    ) -> None:
        self._catalog = catalog
        self._bus = bus
        self._limiter = limiter

    def _validate(self, request: CreateProjectRequest) -> dict[str, Any]:
        problems: list[Problem] = []
        name, slug = check_project_name(request.name, problems)
        environments = check_environments(request.environments, problems)
        key = check_idempotency_key(request.idempotency_key, problems)
        parameters: dict[str, Any] = {}
        try:
            template = self._catalog.get(request.template)
        except InvalidInput as exc:
            problems.extend(exc.problems)
        else:
            try:
                parameters = validate_parameters(template, request.parameters)
            except InvalidInput as exc:
                problems.extend(exc.problems)
        if problems:
            raise InvalidInput(problems)
        return {
            "name": name,
            "slug": slug,
            "template": request.template,
            "parameters": parameters,
            "environment_names": list(environments),
            "idempotency_key": key,
        }

    async def create(self, owner: User, request: CreateProjectRequest) -> Project:
        """Validate, then write the project, its steps and an audit entry atomically.

        The same ``idempotency_key`` from the same owner returns the first project,
        also under concurrent calls (the unique key decides).
        """
        values = self._validate(request)
        key = values["idempotency_key"]
        if key is not None:
            existing = await Project.filter(owner_id=owner.id, idempotency_key=key).first()
            if existing is not None:
                return _same_request(existing, values)
        if self._limiter is not None:
            self._limiter.take(str(owner.id), ["input"])
        try:
            project = await self._insert(owner, values)
        except (IntegrityError, InvalidInput) as exc:
            # A concurrent call with the same key may have won the race.
            if key is not None:
                existing = await Project.filter(owner_id=owner.id, idempotency_key=key).first()
                if existing is not None:
                    return _same_request(existing, values)
            if isinstance(exc, InvalidInput):
                raise
            raise _name_taken(values["name"]) from None
        await self._bus.wake_runners()
        return project

    async def _insert(self, owner: User, values: dict[str, Any]) -> Project:
        now = utcnow()
        async with transaction() as connection:
            taken = (
                await Project.filter(owner_id=owner.id, slug=values["slug"])
                .using_db(connection)
                .exists()
            )
            if taken:
                raise _name_taken(values["name"])
            project = await Project.create(
                owner_id=owner.id, created_at=now, updated_at=now, using_db=connection, **values
            )
            await InitializationStep.bulk_create(
                [
                    InitializationStep(
                        project_id=project.id, name=spec.name, position=index, updated_at=now
                    )
                    for index, spec in enumerate(STEP_PLAN)
                ],
                using_db=connection,
            )
            await AuditEntry.create(
                project_id=project.id,
                actor=owner.name,
                action="project.created",
                details={"template": values["template"], "name": values["name"]},
                created_at=now,
                using_db=connection,
            )
        return project

    async def get(self, owner: User, project_id: str) -> Project:
        project = await Project.filter(id=parse_project_id(project_id), owner_id=owner.id).first()
        if project is None:
            raise NotFound("Project not found")
        return project

    async def page(
        self,
        owner: User,
        *,
        first: int,
        after: str | None,
        status: ProjectState | None,
    ) -> ProjectPage:
        """Newest first; cursors are opaque (creation time and id)."""
        if not 1 <= first <= PAGE_MAX:
            raise InvalidInput.one(
                ["first"], f"first must be between 1 and {PAGE_MAX}.", "INVALID_VALUE"
            )
        query = Project.filter(owner_id=owner.id)
        if status is not None:
            query = query.filter(status=status)
        total = await query.count()
        if after is not None:
            created_at, project_id = decode_cursor(after)
            query = query.filter(
                Q(created_at__lt=created_at) | Q(created_at=created_at, id__lt=project_id)
            )
        rows = await query.order_by("-created_at", "-id").limit(first + 1)
        return ProjectPage(rows[:first], len(rows) > first, total)

    async def environments(self, project: Project) -> list[Environment]:
        return await Environment.filter(project_id=project.id).order_by("position")

    async def repository(self, project: Project) -> Repository | None:
        return await Repository.filter(project_id=project.id).first()


def _same_request(existing: Project, values: dict[str, Any]) -> Project:
    """An idempotency key names one request; reusing it for another is a mistake."""
    same = (
        existing.name == values["name"]
        and existing.template == values["template"]
        and existing.parameters == values["parameters"]
        and list(existing.environment_names) == values["environment_names"]
    )
    if not same:
        raise InvalidInput.one(
            ["idempotencyKey"],
            "This idempotency key was already used for a different project request.",
            "IDEMPOTENCY_KEY_REUSED",
        )
    return existing


def _name_taken(name: str) -> InvalidInput:
    return InvalidInput.one(
        ["name"], f"You already have a project named '{name}'. Choose another name.", "NAME_TAKEN"
    )


def encode_cursor(project: Project) -> str:
    raw = f"{project.created_at.isoformat()}|{project.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    try:
        created, _, project_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        return datetime.fromisoformat(created), UUID(project_id)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput.one(["after"], "Invalid cursor.", "INVALID_CURSOR") from exc
