"""The journal: every state change of an initialization, committed with its event.

A change is applied to the status in memory, then committed in one
transaction: a *guarded* update of the project row (which also advances
``last_seq``), the step rows, and one ``progress_events`` row per change.
The guard is the writer's right to write — the runner's lease, or the state
an API action expects (FAILED for a retry, say) — plus the ``last_seq`` it
read, so two writers can never interleave events. Publishing happens only
after the commit, so nobody hears of a change the database lacks.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.events import EventType, ProgressEvent
from initflow.models import Project
from initflow.models.journal_writes import EventRow, Guard, JournalWrite, is_postgres, write_journal
from initflow.models.transactions import transaction
from initflow.services.group_commit import group_commit
from initflow.states import ProjectState, check_project_transition, check_step_transition
from initflow.status import StatusView

_STEP_COLUMNS = (
    "status",
    "progress",
    "message",
    "attempts",
    "started_at",
    "completed_at",
    "error_code",
    "error_message",
    "next_attempt_at",
)


Effects = Callable[[BaseDBAsyncClient], Awaitable[None]]


@dataclass(frozen=True)
class Change:
    """One event's worth of change: a step's new fields and/or the project's."""

    type: EventType
    step: str | None = None
    step_fields: dict[str, Any] = field(default_factory=dict)
    project_status: ProjectState | None = None
    error: str | None = None
    checkpoint: dict[str, Any] | None = None


@asynccontextmanager
async def guarded_transaction(
    guard: Guard, lost: Callable[[], Exception], **project_changes: Any
) -> AsyncIterator[BaseDBAsyncClient]:
    """A transaction that starts by updating the project row where ``guard`` holds.

    No matching row raises ``lost()`` before anything else is written. The
    update holds the row (Postgres) or the database (SQLite) until commit.
    """
    async with transaction() as connection:
        matched = (
            await Project.filter(**guard)
            .using_db(connection)
            .update(**{"updated_at": utcnow(), **project_changes})
        )
        if matched != 1:
            raise lost()
        yield connection


def apply_changes(
    status: StatusView, changes: tuple[Change, ...]
) -> tuple[StatusView, list[ProgressEvent]]:
    """The status after ``changes`` and one event per change (seq advancing by one each)."""
    now = utcnow()
    events: list[ProgressEvent] = []
    for change in changes:
        steps, state, error = status.steps, status.status, status.error
        if change.step is not None and change.step_fields:
            current = status.step(change.step)
            new_state = change.step_fields.get("status")
            if new_state is not None:
                check_step_transition(current.status, new_state)
            steps = status.steps_with(
                current.changed(**{"last_progress_at": now, **change.step_fields})
            )
        if change.project_status is not None:
            check_project_transition(state, change.project_status)
            state, error = change.project_status, change.error
        status = StatusView(status.project_id, state, steps, error, status.seq + 1, now)
        events.append(
            ProgressEvent(status.project_id, status.seq, change.type, now, change.step, status)
        )
    return status, events


async def commit_changes(
    before: StatusView,
    changes: tuple[Change, ...],
    *,
    guard: Guard,
    lost: Callable[[], Exception],
    bus: ProgressBus,
    project_changes: dict[str, Any] | None = None,
    effects: Effects | None = None,
) -> tuple[StatusView, list[ProgressEvent]]:
    """Commit ``changes`` atomically, then publish their events; returns the new status.

    ``guard`` is the writer's right to write; the ``last_seq`` read is added to
    it. ``effects`` writes rows that belong to the same change (an audit entry,
    a notification) inside the same transaction.
    """
    after, events = apply_changes(before, changes)
    columns: dict[str, Any] = {
        "last_seq": after.seq,
        "progress": after.progress,
        **(project_changes or {}),
    }
    if after.status is not before.status:
        columns["status"] = after.status
        columns["initialization_error"] = after.error
        if after.status.is_terminal:
            columns.update(finished_at=events[-1].at, lease_owner=None, lease_expires_at=None)
        else:
            columns.update(finished_at=None, next_attempt_at=None)
    write = JournalWrite(
        project_id=UUID(before.project_id),
        guard={**guard, "last_seq": before.seq},
        project_columns=columns,
        step_columns=_step_columns(after, changes),
        events=[EventRow(e.seq, e.type.value, e.payload_json, e.at) for e in events],
        updated_at=events[-1].at,
    )
    await _commit(write, lost, effects)
    await bus.publish(events)
    return after, events


async def _commit(
    write: JournalWrite, lost: Callable[[], Exception], effects: Effects | None
) -> None:
    """Postgres without effects: one statement, maybe shared with other runs' writes
    (``services/group_commit.py``); else one transaction."""
    database = Project._meta.db
    if effects is None and is_postgres(database):
        if not await group_commit().write(write):
            raise lost()
        return
    async with transaction() as connection:
        if not await write_journal(connection, write):
            raise lost()
        if effects is not None:
            await effects(connection)


def _step_columns(status: StatusView, changes: tuple[Change, ...]) -> dict[str, dict[str, Any]]:
    """The columns each touched step row gets: the changed fields, from the new status."""
    touched: dict[str, dict[str, Any]] = {}
    for change in changes:
        if change.step is None:
            continue
        columns = touched.setdefault(change.step, {})
        view = status.step(change.step)
        for name in change.step_fields:
            if name in _STEP_COLUMNS:
                columns[name] = getattr(view, name)
        if change.checkpoint is not None:
            columns["checkpoint"] = change.checkpoint
    return {name: columns for name, columns in touched.items() if columns}
