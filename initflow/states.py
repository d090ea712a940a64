"""Project and step states, and the only transitions the runner may make."""

from __future__ import annotations

from enum import StrEnum


class ProjectState(StrEnum):
    INITIALIZING = "initializing"
    ACTIVE = "active"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self is not ProjectState.INITIALIZING


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"

    @property
    def is_done(self) -> bool:
        """Completed and skipped both count as done (a skipped step never runs again)."""
        return self in (StepState.COMPLETED, StepState.SKIPPED)


STEP_TRANSITIONS: dict[StepState, frozenset[StepState]] = {
    StepState.PENDING: frozenset({StepState.RUNNING, StepState.SKIPPED}),
    # RUNNING -> RUNNING is a resume after a crash or a retry of a transient failure;
    # RUNNING -> PENDING is a cancel that interrupted the step.
    StepState.RUNNING: frozenset(
        {
            StepState.RUNNING,
            StepState.COMPLETED,
            StepState.FAILED,
            StepState.SKIPPED,
            StepState.PENDING,
        }
    ),
    # FAILED -> PENDING is retryInitialization.
    StepState.FAILED: frozenset({StepState.RUNNING, StepState.PENDING}),
    StepState.COMPLETED: frozenset(),
    StepState.SKIPPED: frozenset(),
}

PROJECT_TRANSITIONS: dict[ProjectState, frozenset[ProjectState]] = {
    ProjectState.INITIALIZING: frozenset(
        {ProjectState.ACTIVE, ProjectState.FAILED, ProjectState.CANCELED}
    ),
    ProjectState.FAILED: frozenset({ProjectState.INITIALIZING}),
    ProjectState.CANCELED: frozenset({ProjectState.INITIALIZING}),
    ProjectState.ACTIVE: frozenset(),
}


class IllegalTransition(ValueError):
    """A state change the state machine does not allow: a bug, never user input."""


def check_step_transition(current: StepState, new: StepState) -> None:
    if new not in STEP_TRANSITIONS[current]:
        raise IllegalTransition(f"step {current} -> {new}")


def check_project_transition(current: ProjectState, new: ProjectState) -> None:
    if new not in PROJECT_TRANSITIONS[current]:
        raise IllegalTransition(f"project {current} -> {new}")
