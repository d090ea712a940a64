"""Every step, run twice in a row on the same project, converges to the same state."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from initflow.components import catalog_for
from initflow.models import (
    AuditEntry,
    Environment,
    GitopsResource,
    Project,
    ProjectMember,
    Repository,
    WebhookDelivery,
)
from initflow.runner.leases import claim_next, fenced_transaction
from initflow.runner.registry import ProjectFacts, StepContext, StepResult
from initflow.runner.steps import default_registry
from initflow.services.git import list_commits
from initflow.settings import Settings
from initflow.step_plan import STEP_NAMES
from tests.integration.runner_support import world

EXCLUDED = {"id", "created_at"}


async def _rows(project_id: UUID) -> dict[str, Any]:
    tables: dict[str, Any] = {}
    for model in (Environment, Repository, GitopsResource, ProjectMember, WebhookDelivery):
        rows = await model.filter(project_id=project_id).values()
        tables[model.__name__] = sorted(
            sorted((k, str(v)) for k, v in r.items() if k not in EXCLUDED) for r in rows
        )
    audit = await AuditEntry.filter(project_id=project_id).values("action", "dedupe_key")
    tables["AuditEntry"] = sorted((a["action"], str(a["dedupe_key"])) for a in audit)
    return tables


def _tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    if root.exists():
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


async def _state(ctx: StepContext) -> dict[str, Any]:
    commits = await list_commits(ctx.repository_path) if ctx.repository_path.exists() else []
    return {
        "rows": await _rows(ctx.project.id),
        "workspace": _tree_digest(ctx.workspace),
        "commits": commits,
    }


@pytest.mark.parametrize("environments", [None, []], ids=["three-environments", "none"])
async def test_each_step_run_twice_in_a_row_converges_to_the_same_state(
    settings: Settings, environments: list[str] | None
) -> None:
    settings = settings.with_overrides(webhook_url="http://127.0.0.1:9/hook")
    async with world(settings) as w:
        project_id = await w.create("Twice", environments=environments)
        lease = await claim_next("runner-a", timedelta(seconds=30))
        assert lease is not None and lease.project_id == project_id
        project = await Project.get(id=project_id)
        facts = ProjectFacts(
            id=project.id,
            owner_id=w.owner.id,
            name=project.name,
            slug=project.slug,
            template=project.template,
            parameters=project.parameters,
            environments=tuple(project.environment_names),
            created_at=project.created_at,
        )

        async def report(done: int, total: int, message: str) -> None:
            return None

        registry = default_registry()
        for name in STEP_NAMES:
            ctx = StepContext(
                project=facts,
                settings=settings,
                catalog=catalog_for(settings),
                checkpoint={},
                transaction=lambda: fenced_transaction(lease),
                report=report,
            )
            first: StepResult = await registry[name].run(ctx)
            after_first = await _state(ctx)
            second = await registry[name].run(ctx)
            assert await _state(ctx) == after_first, f"{name} did not converge"
            assert second.skipped == first.skipped
            assert second.checkpoint == first.checkpoint

        final = await _state(ctx)
        expected_commits = 2 if environments is None else 1
        assert len(final["commits"]) == expected_commits
        if environments is None:
            assert len(final["rows"]["Environment"]) == 3
            assert len(final["rows"]["GitopsResource"]) == 6
        assert len(final["rows"]["WebhookDelivery"]) == 1
        assert (
            final["rows"]["AuditEntry"].count(("project.initialized", f"{project_id}:initialized"))
            == 1
        )
