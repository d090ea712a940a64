"""The one list of initialization steps, in order.

Step rows are seeded from this list in the transaction that creates the
project; the runner's registry must provide exactly these names. Weights say
how much of the overall percent a step is worth (roughly its usual duration).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StepSpec:
    name: str
    title: str
    weight: int


STEP_PLAN: tuple[StepSpec, ...] = (
    StepSpec("create_project", "Create project", 5),
    StepSpec("render_template", "Render template", 20),
    StepSpec("create_environments", "Create environments", 10),
    StepSpec("create_repository", "Create repository", 10),
    StepSpec("push_template", "Push template", 25),
    StepSpec("configure_gitops", "Configure GitOps", 20),
    StepSpec("finalize", "Finalize", 10),
)

STEP_NAMES: tuple[str, ...] = tuple(s.name for s in STEP_PLAN)
_BY_NAME = {s.name: s for s in STEP_PLAN}


def step_spec(name: str) -> StepSpec:
    return _BY_NAME[name]
