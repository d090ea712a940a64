"""The run journal: every state change of a run, committed with its event.

The executor holds the only writable copy of a run's status while it holds the
lease. ``record`` applies changes to that mirror, then commits in one
transaction: the fenced project update (which also advances ``last_seq``), the
step rows, and one ``progress_events`` row per change. Only after the commit
are the events published, so nobody hears of a change the database lacks.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.events import EventType, ProgressEvent
from initflow.models import InitializationStep, ProgressEventRecord
from initflow.runner.leases import Lease, fenced_transaction
from initflow.states import ProjectState, check_project_transition, check_step_transition
from initflow.status import StatusView, StepView

log = logging.getLogger("initflow.runner")

_STEP_COLUMNS = {
    "status": "status",
    "progress": "progress",
    "message": "message",
    "attempts": "attempts",
    "started_at": "started_at",
    "completed_at": "completed_at",
    "error_code": "error_code",
    "error_message": "error_message",
}


@dataclass(frozen=True)
class Change:
    """One event's worth of change: a step's new fields and/or the project's."""

    type: EventType
    step: str | None = None
    step_fields: dict[str, Any] = field(default_factory=dict)
    project_status: ProjectState | None = None
    error: str | None = None
    checkpoint: dict[str, Any] | None = None


class RunJournal:
    def __init__(self, lease: Lease, status: StatusView, bus: ProgressBus) -> None:
        self.lease = lease
        self.status = status
        self._bus = bus

    async def record(self, *changes: Change) -> list[ProgressEvent]:
        """Commit ``changes`` atomically (one transaction), then publish their events."""
        now = utcnow()
        status = self.status
        events: list[ProgressEvent] = []
        for change in changes:
            status = _apply(status, change)
            status = status.changed(seq=status.seq + 1, updated_at=now)
            events.append(
                ProgressEvent(
                    str(status.project_id), status.seq, change.type, now, change.step, status
                )
            )
        project_changes: dict[str, Any] = {"last_seq": status.seq, "progress": status.progress}
        if status.status is not self.status.status:
            project_changes["status"] = status.status
            project_changes["initialization_error"] = status.error
            if status.status.is_terminal:
                project_changes.update(finished_at=now, lease_owner=None, lease_expires_at=None)
        async with fenced_transaction(
            self.lease, expect={"last_seq": self.status.seq}, **project_changes
        ) as connection:
            await self._write_steps(connection, status, changes)
            await ProgressEventRecord.bulk_create(
                [
                    ProgressEventRecord(
                        project_id=self.lease.project_id,
                        seq=e.seq,
                        type=e.type.value,
                        payload=e.payload(),
                        created_at=e.at,
                    )
                    for e in events
                ],
                using_db=connection,
            )
        self.status = status
        for event in events:
            await self._bus.publish(event)
        return events

    async def _write_steps(
        self, connection: BaseDBAsyncClient, status: StatusView, changes: tuple[Change, ...]
    ) -> None:
        touched: dict[str, dict[str, Any]] = {}
        for change in changes:
            if change.step is None:
                continue
            columns = touched.setdefault(change.step, {})
            view = status.step(change.step)
            for name in change.step_fields:
                columns[_STEP_COLUMNS[name]] = getattr(view, name)
            if change.checkpoint is not None:
                columns["checkpoint"] = change.checkpoint
        now = utcnow()
        for name, columns in touched.items():
            await (
                InitializationStep.filter(project_id=self.lease.project_id, name=name)
                .using_db(connection)
                .update(updated_at=now, **columns)
            )


def _apply(status: StatusView, change: Change) -> StatusView:
    if change.step is not None and change.step_fields:
        current: StepView = status.step(change.step)
        new_state = change.step_fields.get("status")
        if new_state is not None:
            check_step_transition(current.status, new_state)
        status = status.with_step(current.changed(**change.step_fields))
    if change.project_status is not None:
        check_project_transition(status.status, change.project_status)
        status = status.changed(status=change.project_status, error=change.error)
    return status
