"""Step 3: one row and one Kustomize overlay per environment.

Rows are keyed (project, name) and overlays are plain files rewritten with the
same bytes, so a re-run converges. No environments requested: skipped.
"""

from __future__ import annotations

from pathlib import Path

from initflow.clock import utcnow
from initflow.models import Environment
from initflow.runner.registry import StepContext, StepResult

REPLICAS = {"production": 2}


def overlay_kustomization(slug: str, environment: str) -> str:
    replicas = REPLICAS.get(environment, 1)
    return (
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {slug}-{environment}\n"
        "resources:\n"
        "  - ../../base\n"
        "labels:\n"
        "  - pairs:\n"
        f"      app.kubernetes.io/instance: {slug}-{environment}\n"
        f"      initflow.dev/environment: {environment}\n"
        "replicas:\n"
        f"  - name: {slug}\n"
        f"    count: {replicas}\n"
    )


def write_overlay(workspace: Path, slug: str, environment: str) -> Path:
    path = workspace / "deploy" / "overlays" / environment / "kustomization.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(overlay_kustomization(slug, environment))
    return path


class CreateEnvironments:
    name = "create_environments"

    async def run(self, ctx: StepContext) -> StepResult:
        names = ctx.project.environments
        if not names:
            return StepResult(message="No environments requested", skipped=True)
        for index, environment in enumerate(names):
            write_overlay(ctx.workspace, ctx.project.slug, environment)
            async with ctx.transaction() as connection:
                await Environment.get_or_create(
                    project_id=ctx.project.id,
                    name=environment,
                    defaults={"position": index, "created_at": utcnow()},
                    using_db=connection,
                )
            await ctx.progress(index + 1, len(names), f"environment {environment} ready")
        return StepResult(
            message=f"Created {len(names)} environments: {', '.join(names)}",
            checkpoint={"environments": list(names)},
        )
