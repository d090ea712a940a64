"""Overall percent: weighted, honest, 100 only when ACTIVE."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from initflow.states import IllegalTransition, ProjectState, StepState, check_step_transition
from initflow.status import StatusView, StepView, overall_progress
from initflow.step_plan import STEP_PLAN

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def steps(*states: tuple[StepState, int]) -> tuple[StepView, ...]:
    return tuple(
        StepView(spec.name, i, state, progress, None, 0, None, None, None, None)
        for i, (spec, (state, progress)) in enumerate(zip(STEP_PLAN, states, strict=True))
    )


def test_overall_percent_is_weighted_by_step() -> None:
    pending = [(StepState.PENDING, 0)] * 5
    half_render = steps((StepState.COMPLETED, 100), (StepState.RUNNING, 50), *pending)
    weights = [s.weight for s in STEP_PLAN]
    expected = (weights[0] * 100 + weights[1] * 50) // sum(weights)
    assert overall_progress(ProjectState.INITIALIZING, half_render) == expected


def test_all_steps_done_is_99_until_the_project_is_active() -> None:
    done = steps(*[(StepState.COMPLETED, 100)] * 6, (StepState.SKIPPED, 0))
    assert overall_progress(ProjectState.INITIALIZING, done) == 99
    assert overall_progress(ProjectState.ACTIVE, done) == 100


def test_skipped_steps_count_as_done() -> None:
    with_skips = steps(*[(StepState.SKIPPED, 0)] * 7)
    assert overall_progress(ProjectState.INITIALIZING, with_skips) == 99


def test_status_round_trips_through_json() -> None:
    view = StatusView(
        "p", ProjectState.INITIALIZING, steps(*[(StepState.PENDING, 0)] * 7), None, 3, NOW
    )
    assert StatusView.from_json(view.to_json()) == view


def test_current_step_is_the_running_one_else_the_failed_one() -> None:
    running = StatusView(
        "p",
        ProjectState.INITIALIZING,
        steps((StepState.COMPLETED, 100), (StepState.RUNNING, 10), *[(StepState.PENDING, 0)] * 5),
        None,
        1,
        NOW,
    )
    assert running.current_step is not None and running.current_step.name == "render_template"


@pytest.mark.parametrize(
    ("current", "new"),
    [
        (StepState.COMPLETED, StepState.RUNNING),
        (StepState.SKIPPED, StepState.RUNNING),
        (StepState.PENDING, StepState.COMPLETED),
    ],
)
def test_a_done_step_never_runs_again_and_steps_do_not_jump(
    current: StepState, new: StepState
) -> None:
    with pytest.raises(IllegalTransition):
        check_step_transition(current, new)
