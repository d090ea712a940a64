"""The API's view of one step."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from initflow.schema.types import InitializationStep
from initflow.states import StepState
from initflow.status import StepView


def running_since(started: datetime) -> StepView:
    return StepView("render_template", 1, StepState.RUNNING, 10, None, 1, started, None, None, None)


def test_a_running_step_reports_its_time_so_far() -> None:
    started = datetime.now(UTC) - timedelta(seconds=3)
    step = InitializationStep.from_view(running_since(started), timedelta(minutes=5))
    assert step.duration_ms is not None and 3000 <= step.duration_ms < 60_000


def test_a_step_stuck_for_weeks_has_no_duration_rather_than_an_int_overflow() -> None:
    started = datetime.now(UTC) - timedelta(days=30)
    step = InitializationStep.from_view(running_since(started), timedelta(minutes=5))
    assert step.duration_ms is None and step.started_at == started
