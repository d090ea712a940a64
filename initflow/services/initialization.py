"""User actions on a run: retry a failed (or canceled) one, cancel a running one.

Both go through the journal guarded by the state they expect and the
``last_seq`` they read; losing a race to the runner just means reading again.
Cancel also clears the lease, so the runner's next fenced write fails and it
stops (cooperatively, also inside a step).
"""

from __future__ import annotations

from uuid import UUID

from tortoise.expressions import Q

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.errors import InitflowError, InvalidInput
from initflow.events import EventType
from initflow.models import AuditEntry, User
from initflow.services.journal import Change, commit_changes
from initflow.services.snapshots import load_status
from initflow.states import ProjectState, StepState
from initflow.status import StatusView

RACE_ATTEMPTS = 20


class _Raced(InitflowError):
    """The project changed between read and write."""

    code = "CONFLICT"


class InitializationService:
    def __init__(self, bus: ProgressBus) -> None:
        self._bus = bus

    async def retry(self, user: User, project_id: UUID) -> StatusView:
        """Resume a FAILED or CANCELED run from where it stopped.

        A retry of a run that is already initializing (a double click) changes
        nothing and returns its status.
        """
        for _ in range(RACE_ATTEMPTS):
            status = await load_status(project_id, owner_id=user.id)
            if status.status is ProjectState.INITIALIZING:
                return status
            if status.status is ProjectState.ACTIVE:
                raise InvalidInput.one(
                    ["projectId"],
                    "The project is already active; there is nothing to retry.",
                    "NOT_RETRYABLE",
                )
            failed = next((s for s in status.steps if s.status is StepState.FAILED), None)
            change = Change(
                EventType.INITIALIZATION_RETRIED,
                failed.name if failed else None,
                {
                    "status": StepState.PENDING,
                    "message": "Retry requested",
                    "error_code": None,
                    "error_message": None,
                }
                if failed
                else {},
                project_status=ProjectState.INITIALIZING,
            )
            try:
                after, _ = await commit_changes(
                    status,
                    (change,),
                    guard=Q(id=project_id, status__in=[ProjectState.FAILED, ProjectState.CANCELED]),
                    lost=_Raced,
                    bus=self._bus,
                    project_changes={"run_attempts": 0},
                )
            except _Raced:
                continue
            await _audit(user, project_id, "project.retry_requested", status.status)
            await self._bus.wake_runners()
            return after
        raise _Raced("The project kept changing; try again.")

    async def cancel(self, user: User, project_id: UUID) -> StatusView:
        """Stop a running initialization; what was created stays."""
        for _ in range(RACE_ATTEMPTS):
            status = await load_status(project_id, owner_id=user.id)
            if status.status.is_terminal:
                raise InvalidInput.one(
                    ["projectId"],
                    f"The project is already {status.status.value}; "
                    "only a running initialization can be canceled.",
                    "NOT_CANCELABLE",
                )
            running = next((s for s in status.steps if s.status is StepState.RUNNING), None)
            change = Change(
                EventType.INITIALIZATION_CANCELED,
                running.name if running else None,
                {"status": StepState.PENDING, "message": "Canceled"} if running else {},
                project_status=ProjectState.CANCELED,
                error=None,
            )
            try:
                after, _ = await commit_changes(
                    status,
                    (change,),
                    guard=Q(id=project_id, status=ProjectState.INITIALIZING),
                    lost=_Raced,
                    bus=self._bus,
                )
            except _Raced:
                continue
            await _audit(user, project_id, "project.canceled", status.status)
            return after
        raise _Raced("The project kept changing; try again.")


async def _audit(user: User, project_id: UUID, action: str, previous: ProjectState) -> None:
    await AuditEntry.create(
        project_id=project_id,
        actor=user.name,
        action=action,
        details={"previous_status": previous.value},
        created_at=utcnow(),
    )
