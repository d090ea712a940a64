"""Step 5: commit the workspace as the initial commit and move ``main`` to it.

The commit is deterministic (fixed author, the project's creation time), so a
re-run computes the same SHA and the compare-and-swap of the branch is a no-op.
"""

from __future__ import annotations

from initflow.models import Repository
from initflow.runner.registry import StepContext, StepResult
from initflow.services.git import CommitIdentity, commit_directory, update_branch

SERVICE_IDENTITY_NAME = "initflow"
SERVICE_IDENTITY_EMAIL = "initflow@localhost"


def service_identity(ctx: StepContext) -> CommitIdentity:
    return CommitIdentity(
        name=SERVICE_IDENTITY_NAME,
        email=SERVICE_IDENTITY_EMAIL,
        timestamp=ctx.project.created_at,
    )


class PushTemplate:
    name = "push_template"

    async def run(self, ctx: StepContext) -> StepResult:
        await ctx.progress(0, 3, "Committing workspace")
        sha = await commit_directory(
            ctx.repository_path,
            ctx.workspace,
            message=f"Initial commit from template {ctx.project.template}",
            identity=service_identity(ctx),
        )
        await ctx.progress(1, 3, f"Pushing {sha[:12]} to main")
        await update_branch(ctx.repository_path, "main", sha, expected_old=None)
        async with ctx.transaction() as connection:
            await (
                Repository.filter(project_id=ctx.project.id)
                .using_db(connection)
                .update(initial_commit=sha, head_commit=sha)
            )
        await ctx.progress(2, 3, "Initial commit recorded")
        return StepResult(message=f"Pushed initial commit {sha[:12]}", checkpoint={"commit": sha})
