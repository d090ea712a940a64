"""Step 6: Flux manifests per environment and a CI workflow, committed on top of main.

The GitOps commit's tree is the initial tree plus ``clusters/<env>/`` and the
workflow, staged in a sibling folder of the workspace; the commit is
deterministic and ``main`` moves from the initial commit by compare-and-swap, so
a re-run converges. Applying to a cluster happens only when one is configured;
otherwise that part is reported as skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from initflow.clock import utcnow
from initflow.errors import PermanentStepError
from initflow.models import GitopsResource, Repository
from initflow.runner.registry import StepContext, StepResult
from initflow.runner.steps.push_template import service_identity
from initflow.services.git import commit_directory, read_branch, update_branch

FLUX_INTERVAL = "1m0s"


def git_repository_manifest(slug: str, environment: str, clone_url: str) -> str:
    return (
        "apiVersion: source.toolkit.fluxcd.io/v1\n"
        "kind: GitRepository\n"
        "metadata:\n"
        f"  name: {slug}\n"
        f"  namespace: {slug}-{environment}\n"
        "spec:\n"
        f"  interval: {FLUX_INTERVAL}\n"
        f"  url: {clone_url}\n"
        "  ref:\n"
        "    branch: main\n"
    )


def kustomization_manifest(slug: str, environment: str) -> str:
    return (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\n"
        "kind: Kustomization\n"
        "metadata:\n"
        f"  name: {slug}-{environment}\n"
        f"  namespace: {slug}-{environment}\n"
        "spec:\n"
        f"  interval: {FLUX_INTERVAL}\n"
        f"  path: ./deploy/overlays/{environment}\n"
        "  prune: true\n"
        "  sourceRef:\n"
        "    kind: GitRepository\n"
        f"    name: {slug}\n"
    )


def ci_workflow(environments: tuple[str, ...]) -> str:
    lines = [
        "name: validate",
        "on: [push, pull_request]",
        "jobs:",
        "  kustomize:",
        "    runs-on: ubuntu-latest",
        "    steps:",
        "      - uses: actions/checkout@v4",
    ]
    for environment in environments:
        lines.append(f"      - run: kubectl kustomize deploy/overlays/{environment} > /dev/null")
    return "\n".join(lines) + "\n"


def stage_gitops_tree(
    ctx: StepContext, staging: Path, clone_url: str
) -> list[tuple[str, str, str]]:
    """Copy the workspace and add the GitOps files; returns (environment, kind, path).

    ``clone_url`` is the one recorded when the repository was created, not this
    process's address, so a resumed run on another instance commits the same bytes.
    """
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(ctx.workspace, staging)
    slug = ctx.project.slug
    resources: list[tuple[str, str, str]] = []
    for environment in ctx.project.environments:
        folder = staging / "clusters" / environment
        folder.mkdir(parents=True, exist_ok=True)
        source = folder / f"{slug}-source.yaml"
        source.write_text(git_repository_manifest(slug, environment, clone_url))
        sync = folder / f"{slug}-kustomization.yaml"
        sync.write_text(kustomization_manifest(slug, environment))
        resources.append((environment, "GitRepository", str(source.relative_to(staging))))
        resources.append((environment, "Kustomization", str(sync.relative_to(staging))))
    workflow = staging / ".github" / "workflows" / "validate.yml"
    workflow.parent.mkdir(parents=True, exist_ok=True)
    workflow.write_text(ci_workflow(ctx.project.environments))
    return resources


class ConfigureGitops:
    name = "configure_gitops"

    async def run(self, ctx: StepContext) -> StepResult:
        environments = ctx.project.environments
        if not environments:
            return StepResult(message="No environments to deploy", skipped=True)
        repository = await Repository.get(project_id=ctx.project.id)
        if repository.initial_commit is None:
            raise PermanentStepError("The initial commit is missing", code="GITOPS_NO_BASE")
        await ctx.progress(0, 3, "Writing Flux manifests")
        staging = ctx.workspace.with_name(ctx.workspace.name + ".gitops")
        resources = stage_gitops_tree(ctx, staging, repository.clone_url or ctx.clone_url)
        sha = await commit_directory(
            ctx.repository_path,
            staging,
            message="Configure GitOps (Flux) for " + ", ".join(environments),
            identity=service_identity(ctx),
            parent=repository.initial_commit,
        )
        await ctx.progress(1, 3, f"Pushing {sha[:12]} to main")
        if await read_branch(ctx.repository_path, "main") != sha:
            await update_branch(ctx.repository_path, "main", sha, repository.initial_commit)
        async with ctx.transaction() as connection:
            for environment, kind, path in resources:
                await GitopsResource.get_or_create(
                    project_id=ctx.project.id,
                    environment=environment,
                    kind=kind,
                    defaults={
                        "name": f"{ctx.project.slug}-{environment}",
                        "path": path,
                        "created_at": utcnow(),
                    },
                    using_db=connection,
                )
            await (
                Repository.filter(project_id=ctx.project.id)
                .using_db(connection)
                .update(head_commit=sha)
            )
        await ctx.progress(2, 3, "No cluster configured: apply skipped")
        shutil.rmtree(staging, ignore_errors=True)
        return StepResult(
            message=(
                f"Committed Flux manifests for {len(environments)} environments ({sha[:12]}); "
                "no cluster configured, apply skipped"
            ),
            checkpoint={"commit": sha, "applied": False},
        )
