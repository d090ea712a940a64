"""GraphQL object types, built from the service layer's views and rows."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, cast

import strawberry
from strawberry.scalars import JSON

from initflow import states
from initflow.clock import utcnow
from initflow.events import EventType, ProgressEvent
from initflow.models import Project as ProjectRow
from initflow.services.templates import Template as TemplateSpec
from initflow.status import StatusView, StepView

ProjectState = strawberry.enum(states.ProjectState, name="ProjectState")
StepState = strawberry.enum(states.StepState, name="StepState")
InitEventType = strawberry.enum(EventType, name="InitEventType")


GRAPHQL_INT_MAX = 2**31 - 1


@strawberry.type
class StepError:
    code: str
    message: str


@strawberry.type
class InitializationStep:
    name: str
    title: str
    position: int
    status: StepState  # type: ignore[valid-type]
    progress: int
    message: str | None
    attempts: int
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None = strawberry.field(
        description=(
            "Completed steps: completedAt - startedAt; a running step: time so far. "
            "Null beyond GraphQL's 32-bit Int (about 24.8 days): startedAt still tells."
        )
    )
    error: StepError | None
    next_attempt_at: datetime | None = strawberry.field(
        description="When a step that failed transiently will be tried again."
    )
    stalled_since: datetime | None = strawberry.field(
        description="Set while a running step has reported no progress for too long."
    )

    @classmethod
    def from_view(cls, view: StepView, stall_after: timedelta) -> InitializationStep:
        now = utcnow()
        end = view.completed_at or (now if view.status is states.StepState.RUNNING else None)
        duration = (
            int((end - view.started_at).total_seconds() * 1000)
            if view.started_at is not None and end is not None
            else None
        )
        if duration is not None and duration > GRAPHQL_INT_MAX:
            duration = None  # one step stuck for weeks must not fail the whole query
        error = (
            StepError(code=view.error_code, message=view.error_message or view.error_code)
            if view.error_code is not None
            else None
        )
        return cls(
            name=view.name,
            title=view.title,
            position=view.position,
            status=view.status,
            progress=view.progress,
            message=view.message,
            attempts=view.attempts,
            started_at=view.started_at,
            completed_at=view.completed_at,
            duration_ms=duration,
            error=error,
            next_attempt_at=view.next_attempt_at,
            stalled_since=view.stalled_since(now, stall_after),
        )


@strawberry.type
class ProjectStatus:
    project_id: strawberry.ID
    status: ProjectState  # type: ignore[valid-type]
    progress: int = strawberry.field(description="Overall percent 0..100, computed on the server.")
    steps: list[InitializationStep]
    current_step: InitializationStep | None
    error: str | None
    seq: int = strawberry.field(description="seq of the last progress event this status includes.")
    updated_at: datetime

    @classmethod
    def from_view(cls, view: StatusView, stall_after: timedelta) -> ProjectStatus:
        current = view.current_step
        return cls(
            project_id=strawberry.ID(view.project_id),
            status=view.status,
            progress=view.progress,
            steps=[InitializationStep.from_view(s, stall_after) for s in view.steps],
            current_step=InitializationStep.from_view(current, stall_after) if current else None,
            error=view.error,
            seq=view.seq,
            updated_at=view.updated_at,
        )


@strawberry.type
class InitProgressEvent:
    seq: int
    type: InitEventType  # type: ignore[valid-type]
    at: datetime
    step: InitializationStep | None
    status: ProjectStatus
    shared_results: strawberry.Private[dict[Hashable, object]] = dataclass_field(
        default_factory=dict
    )

    @classmethod
    def from_event(cls, event: ProgressEvent, stall_after: timedelta) -> InitProgressEvent:
        """The event's GraphQL view, built once per event object and shared by its subscribers.

        Durations and stalls of running steps are therefore as of the event's first
        delivery in this process, not each subscriber's.
        """
        view = event.derived_views.get(cls)
        if isinstance(view, cls):
            return view
        step = event.status.step(event.step_name) if event.step_name else None
        view = cls(
            seq=event.seq,
            type=event.type,
            at=event.at,
            step=InitializationStep.from_view(step, stall_after) if step else None,
            status=ProjectStatus.from_view(event.status, stall_after),
        )
        event.derived_views[cls] = view
        return view


@strawberry.type
class Repository:
    clone_url: str
    default_branch: str
    head_commit: str | None


@strawberry.type
class Environment:
    name: str


@strawberry.type
class TemplateParameter:
    name: str
    type: str
    required: bool
    default: JSON | None
    description: str | None


@strawberry.type
class Template:
    name: str
    title: str
    description: str | None
    parameters: list[TemplateParameter]

    @classmethod
    def from_spec(cls, spec: TemplateSpec) -> Template:
        return cls(
            name=spec.name,
            title=spec.title,
            description=spec.description,
            parameters=[
                TemplateParameter(
                    name=p.name,
                    type=p.type,
                    required=p.required,
                    default=cast(JSON | None, p.default),
                    description=p.description,
                )
                for p in spec.parameters
            ],
        )


@strawberry.type
class User:
    id: strawberry.ID
    name: str


@strawberry.type
class UserError:
    field: list[str] | None
    message: str
    code: str


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


if TYPE_CHECKING:
    from initflow.schema.project import Project

ProjectRef = Annotated["Project", strawberry.lazy("initflow.schema.project")]


@strawberry.type
class ProjectEdge:
    cursor: str
    node: ProjectRef


@strawberry.type
class ProjectConnection:
    edges: list[ProjectEdge]
    page_info: PageInfo
    total_count: int


@strawberry.type
class CreateProjectPayload:
    project: ProjectRef | None
    user_errors: list[UserError]


@strawberry.type
class InitializationPayload:
    status: ProjectStatus | None
    user_errors: list[UserError]


def project_row_status(row: ProjectRow) -> states.ProjectState:
    return row.status
