"""The seven initialization steps, one module each, in plan order."""

from initflow.runner.registry import StepRegistry
from initflow.runner.steps.configure_gitops import ConfigureGitops
from initflow.runner.steps.create_environments import CreateEnvironments
from initflow.runner.steps.create_project import CreateProject
from initflow.runner.steps.create_repository import CreateRepository
from initflow.runner.steps.finalize import Finalize
from initflow.runner.steps.push_template import PushTemplate
from initflow.runner.steps.render_template import RenderTemplate


def default_registry() -> StepRegistry:
    steps = (
        CreateProject(),
        RenderTemplate(),
        CreateEnvironments(),
        CreateRepository(),
        PushTemplate(),
        ConfigureGitops(),
        Finalize(),
    )
    return StepRegistry({step.name: step for step in steps})
