"""User actions on a run: retry a failed (or canceled) one, cancel a running one.

Both go through the journal guarded by the state they expect and the
``last_seq`` they read; losing a race to the runner just means reading again.
Cancel also clears the lease, so the runner's next fenced write fails and it
stops (cooperatively, also inside a step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

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


@dataclass(frozen=True)
class _Action:
    """What an action does to a status it may act on, and the state it requires."""

    audit: str
    expects: tuple[ProjectState, ...]
    change: Callable[[StatusView], Change]
    project_changes: dict[str, Any]


def _retry_change(status: StatusView) -> Change:
    failed = next((s for s in status.steps if s.status is StepState.FAILED), None)
    # A fresh start time: the step's duration is that of the attempt that succeeds.
    reset = {
        "status": StepState.PENDING,
        "message": "Retry requested",
        "error_code": None,
        "started_at": None,
    }
    return Change(
        EventType.INITIALIZATION_RETRIED,
        failed.name if failed else None,
        {**reset, "error_message": None} if failed else {},
        project_status=ProjectState.INITIALIZING,
    )


def _cancel_change(status: StatusView) -> Change:
    running = next((s for s in status.steps if s.status is StepState.RUNNING), None)
    return Change(
        EventType.INITIALIZATION_CANCELED,
        running.name if running else None,
        {"status": StepState.PENDING, "message": "Canceled"} if running else {},
        project_status=ProjectState.CANCELED,
    )


RETRY = _Action(
    "project.retry_requested",
    (ProjectState.FAILED, ProjectState.CANCELED),
    _retry_change,
    {"run_attempts": 0},
)
CANCEL = _Action("project.canceled", (ProjectState.INITIALIZING,), _cancel_change, {})


class InitializationService:
    def __init__(self, bus: ProgressBus) -> None:
        self._bus = bus

    async def retry(self, user: User, project_id: UUID) -> StatusView:
        """Resume a FAILED or CANCELED run from where it stopped.

        A retry of a run that is already initializing (a double click) changes
        nothing and returns its status.
        """

        def refuse(status: StatusView) -> StatusView | None:
            if status.status is ProjectState.INITIALIZING:
                return status
            if status.status is ProjectState.ACTIVE:
                raise InvalidInput.one(
                    ["projectId"],
                    "The project is already active; there is nothing to retry.",
                    "NOT_RETRYABLE",
                )
            return None

        after = await self._act(user, project_id, RETRY, refuse)
        await self._bus.wake_runners()
        return after

    async def cancel(self, user: User, project_id: UUID) -> StatusView:
        """Stop a running initialization; what was created stays."""

        def refuse(status: StatusView) -> StatusView | None:
            if status.status.is_terminal:
                raise InvalidInput.one(
                    ["projectId"],
                    f"The project is already {status.status.value}; "
                    "only a running initialization can be canceled.",
                    "NOT_CANCELABLE",
                )
            return None

        after = await self._act(user, project_id, CANCEL, refuse)
        await self._bus.announce_cancel(str(project_id))
        return after

    async def _act(
        self,
        user: User,
        project_id: UUID,
        action: _Action,
        refuse: Callable[[StatusView], StatusView | None],
    ) -> StatusView:
        """Read, check, commit guarded by the expected state; read again after a race."""
        for _ in range(RACE_ATTEMPTS):
            status = await load_status(project_id, owner_id=user.id)
            unchanged = refuse(status)
            if unchanged is not None:
                return unchanged
            try:
                after, _ = await commit_changes(
                    status,
                    (action.change(status),),
                    guard={"id": project_id, "status__in": list(action.expects)},
                    lost=_Raced,
                    bus=self._bus,
                    project_changes=action.project_changes,
                )
            except _Raced:
                continue
            await AuditEntry.create(
                project_id=project_id,
                actor=user.name,
                action=action.audit,
                details={"previous_status": status.status.value},
                created_at=utcnow(),
            )
            return after
        raise _Raced("The project kept changing; try again.")
