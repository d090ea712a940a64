"""Step 4: a bare git repository owned by the service (an existing one is reused)."""

from __future__ import annotations

from initflow.clock import utcnow
from initflow.models import Repository
from initflow.runner.registry import StepContext, StepResult
from initflow.services.git import ensure_bare_repository


class CreateRepository:
    name = "create_repository"

    async def run(self, ctx: StepContext) -> StepResult:
        await ctx.progress(0, 2, "Initializing bare repository")
        created = await ensure_bare_repository(ctx.repository_path)
        async with ctx.transaction() as connection:
            await Repository.get_or_create(
                project_id=ctx.project.id,
                defaults={
                    "path": str(ctx.repository_path),
                    "clone_url": ctx.clone_url,
                    "default_branch": "main",
                    "created_at": utcnow(),
                },
                using_db=connection,
            )
        await ctx.progress(1, 2, "Repository registered")
        verb = "Created" if created else "Reused"
        return StepResult(
            message=f"{verb} repository {ctx.clone_url}",
            checkpoint={"path": str(ctx.repository_path)},
        )
