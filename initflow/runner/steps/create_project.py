"""Step 1: check the project's inputs still hold and allocate its workspace.

The project row itself is written by ``createProject`` (with its steps, in one
transaction); this step re-validates the parameters against the template as it
is now (templates are data and may change between create and run).
"""

from __future__ import annotations

from initflow.errors import InvalidInput, PermanentStepError
from initflow.runner.registry import StepContext, StepResult
from initflow.services.templates import validate_parameters


class CreateProject:
    name = "create_project"

    async def run(self, ctx: StepContext) -> StepResult:
        await ctx.progress(0, 2, "Checking template parameters")
        try:
            template = ctx.catalog.get(ctx.project.template)
            validate_parameters(template, ctx.project.parameters)
        except InvalidInput as exc:
            raise PermanentStepError(exc.message, code="INVALID_PROJECT_INPUT") from exc
        ctx.settings.workspaces_dir.mkdir(parents=True, exist_ok=True)
        await ctx.progress(1, 2, "Allocating workspace")
        return StepResult(
            message=f"Project '{ctx.project.name}' recorded",
            checkpoint={"workspace": str(ctx.workspace)},
        )
