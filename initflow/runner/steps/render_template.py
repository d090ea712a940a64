"""Step 2: render the template into the project's workspace (same inputs, same bytes)."""

from __future__ import annotations

from typing import Any

from initflow.runner.registry import ProjectFacts, StepContext, StepResult
from initflow.services.templates import render_template, validate_parameters


def render_context(project: ProjectFacts, parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        **parameters,
        "project_name": project.name,
        "slug": project.slug,
        "project_id": str(project.id),
        "template": project.template,
        "environments": list(project.environments),
        "parameters": parameters,
    }


class RenderTemplate:
    name = "render_template"

    async def run(self, ctx: StepContext) -> StepResult:
        template = ctx.catalog.get(ctx.project.template)
        parameters = validate_parameters(template, ctx.project.parameters)

        async def on_file(done: int, total: int, path: str) -> None:
            await ctx.progress(done, total, f"files {done}/{total}: {path}")

        files = await render_template(
            template, render_context(ctx.project, parameters), ctx.workspace, on_file
        )
        return StepResult(
            message=f"Rendered {len(files)} files from template '{template.name}'",
            checkpoint={"files": len(files)},
        )
