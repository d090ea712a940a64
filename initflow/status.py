"""The picture of an initialization: steps, overall percent, current step.

Built the same way from database rows (snapshots) and from the runner's
in-memory mirror (events), so a client renders identically from either.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

import orjson

from initflow.states import ProjectState, StepState
from initflow.step_plan import step_spec


@dataclass(frozen=True)
class StepView:
    name: str
    position: int
    status: StepState
    progress: int
    message: str | None
    attempts: int
    started_at: datetime | None
    completed_at: datetime | None
    error_code: str | None
    error_message: str | None
    last_progress_at: datetime | None = None
    next_attempt_at: datetime | None = None

    @property
    def title(self) -> str:
        return step_spec(self.name).title

    @property
    def weight(self) -> int:
        return step_spec(self.name).weight

    def to_json(self) -> dict[str, Any]:
        """Cached: a step is immutable, and each event re-encodes every step of its run."""
        return self._json

    @cached_property
    def json_text(self) -> str:
        return _compact(self._json)

    @cached_property
    def _json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "position": self.position,
            "status": self.status.value,
            "progress": self.progress,
            "message": self.message,
            "attempts": self.attempts,
            "startedAt": _iso(self.started_at),
            "completedAt": _iso(self.completed_at),
            "errorCode": self.error_code,
            "errorMessage": self.error_message,
            "lastProgressAt": _iso(self.last_progress_at),
            "nextAttemptAt": _iso(self.next_attempt_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StepView:
        return cls(
            name=data["name"],
            position=data["position"],
            status=StepState(data["status"]),
            progress=data["progress"],
            message=data["message"],
            attempts=data["attempts"],
            started_at=_parse(data["startedAt"]),
            completed_at=_parse(data["completedAt"]),
            error_code=data["errorCode"],
            error_message=data["errorMessage"],
            last_progress_at=_parse(data.get("lastProgressAt")),
            next_attempt_at=_parse(data.get("nextAttemptAt")),
        )

    def changed(self, **changes: Any) -> StepView:
        """A copy with ``changes`` (cheaper than ``dataclasses.replace`` on the hot path)."""
        values = {name: getattr(self, name) for name in _STEP_FIELDS}
        values.update(changes)
        return StepView(**values)

    def stalled_since(self, now: datetime, threshold: timedelta) -> datetime | None:
        """When a running step that reports nothing became stalled, if it has."""
        if self.status is not StepState.RUNNING:
            return None
        quiet_since = self.last_progress_at or self.started_at
        if quiet_since is None or now - quiet_since < threshold:
            return None
        return quiet_since + threshold


def overall_progress(status: ProjectState, steps: tuple[StepView, ...]) -> int:
    """Weighted percent of the steps; 100 only once the project is ACTIVE.

    Step progress only ever increases, so this never decreases within a run.
    """
    if status is ProjectState.ACTIVE:
        return 100
    total = done = 0
    for step in steps:  # computed for every event: a plain loop, no generator per step
        weight = step_spec(step.name).weight
        total += weight
        done += weight * (100 if step.status in _DONE else step.progress)
    return min(99, done // total) if total else 0


_DONE = frozenset(state for state in StepState if state.is_done)


@dataclass(frozen=True)
class StatusView:
    project_id: str
    status: ProjectState
    steps: tuple[StepView, ...]
    error: str | None
    seq: int
    updated_at: datetime

    @cached_property
    def progress(self) -> int:
        return overall_progress(self.status, self.steps)

    @property
    def current_step(self) -> StepView | None:
        """The running step, else the failed one, else the next pending one."""
        for wanted in (StepState.RUNNING, StepState.FAILED):
            for step in self.steps:
                if step.status is wanted:
                    return step
        if self.status is ProjectState.INITIALIZING:
            for step in self.steps:
                if step.status is StepState.PENDING:
                    return step
        return None

    def step(self, name: str) -> StepView:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    def steps_with(self, new: StepView) -> tuple[StepView, ...]:
        """The steps with ``new`` in place of the step of its name."""
        return tuple(new if s.name == new.name else s for s in self.steps)

    def to_json(self) -> dict[str, Any]:
        return {**self._head(), "steps": [s.to_json() for s in self.steps]}

    def to_json_text(self) -> str:
        """``to_json`` encoded, reusing each (immutable) step's cached encoding."""
        head = _compact(self._head())
        steps = ",".join(s.json_text for s in self.steps)
        return f'{head[:-1]},"steps":[{steps}]}}'

    def _head(self) -> dict[str, Any]:
        return {
            "projectId": self.project_id,
            "status": self.status.value,
            "progress": self.progress,
            "error": self.error,
            "seq": self.seq,
            "updatedAt": _iso(self.updated_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StatusView:
        updated = _parse(data["updatedAt"])
        assert updated is not None
        return cls(
            project_id=data["projectId"],
            status=ProjectState(data["status"]),
            steps=tuple(StepView.from_json(s) for s in data["steps"]),
            error=data["error"],
            seq=data["seq"],
            updated_at=updated,
        )


_STEP_FIELDS = tuple(f.name for f in fields(StepView))


def _compact(value: dict[str, Any]) -> str:
    return orjson.dumps(value).decode()


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value is not None else None
