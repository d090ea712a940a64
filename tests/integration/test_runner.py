"""Runner invariants on a real SQLite database (DESIGN.md, "The step runner")."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from initflow.clock import utcnow
from initflow.errors import LeaseLost, PermanentStepError
from initflow.events import EventType
from initflow.models import InitializationStep, ProgressEventRecord, Project
from initflow.runner.journal import Change, RunJournal
from initflow.runner.leases import claim_next, release, renew
from initflow.runner.registry import StepContext, StepResult
from initflow.runner.steps import default_registry
from initflow.services.snapshots import load_run_start, load_status
from initflow.settings import Settings
from initflow.states import ProjectState, StepState
from tests.integration.runner_support import world

TTL = timedelta(seconds=30)


async def test_a_run_goes_from_created_to_active_through_all_seven_steps(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create("Straight Through")
        await w.runner().run_until_idle()
        status = await load_status(project_id)
        assert status.status is ProjectState.ACTIVE and status.progress == 100
        assert all(s.status is StepState.COMPLETED for s in status.steps)
        project = await Project.get(id=project_id)
        assert project.lease_owner is None, "a finished run holds no lease"


async def test_each_step_transition_is_one_commit_with_its_events(settings: Settings) -> None:
    async with world(settings) as w:
        project_id = await w.create("Counted")
        await w.runner().run_until_idle()
        events = await ProgressEventRecord.filter(project_id=project_id).order_by("seq")
        types = [e.type for e in events]
        # 7 starts + 7 completions + the end; with no step delay no progress writes are needed.
        assert types.count(EventType.STEP_STARTED) == 7
        assert types.count(EventType.STEP_COMPLETED) == 7
        assert types[-1] == EventType.INITIALIZATION_COMPLETED
        # "Completed k" and "started k+1" share one commit: the same created_at instant.
        for done, started in zip(events[1::2], events[2::2], strict=False):
            if done.type == EventType.STEP_COMPLETED and started.type == EventType.STEP_STARTED:
                assert done.created_at == started.created_at


async def test_what_the_journal_commits_reads_back_exactly_as_the_runner_holds_it(
    settings: Settings,
) -> None:
    """The plain-SQL write and read agree with each other and with the ORM's models."""
    async with world(settings) as w:
        project_id = await w.create("Round Trip")
        lease = await claim_next("instance-1", TTL)
        assert lease is not None
        journal = RunJournal(lease, await load_status(project_id), w.bus)
        first, second = journal.status.steps[0].name, journal.status.steps[1].name
        await journal.record(
            Change(EventType.STEP_STARTED, first, {"status": StepState.RUNNING, "attempts": 1})
        )
        checkpoint = {"files": ["a.py", "ü.txt"], "nested": {"n": 1}}
        await journal.record(
            Change(
                EventType.STEP_COMPLETED,
                first,
                {"status": StepState.COMPLETED, "progress": 100, "completed_at": utcnow()},
                checkpoint=checkpoint,
            ),
            Change(
                EventType.STEP_STARTED,
                second,
                {"status": StepState.RUNNING, "attempts": 1, "message": "Starting «now»"},
            ),
        )
        assert await load_status(project_id) == journal.status
        row = await InitializationStep.get(project_id=project_id, name=first)
        assert row.checkpoint == checkpoint and row.completed_at is not None
        records = await ProgressEventRecord.filter(project_id=project_id).order_by("seq")
        assert [(r.seq, r.type) for r in records] == [
            (1, "STEP_STARTED"),
            (2, "STEP_COMPLETED"),
            (3, "STEP_STARTED"),
        ]
        assert json.loads(records[-1].payload)["status"]["steps"][1]["message"] == "Starting «now»"
        project = await Project.get(id=project_id)
        assert project.last_seq == 3 and project.lease_expires_at is not None


async def test_no_environments_means_environment_and_gitops_steps_are_skipped_and_run_finishes(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create("Bare", environments=[])
        await w.runner().run_until_idle()
        status = await load_status(project_id)
        states = {s.name: s.status for s in status.steps}
        assert states["create_environments"] is StepState.SKIPPED
        assert states["configure_gitops"] is StepState.SKIPPED
        assert status.status is ProjectState.ACTIVE and status.progress == 100


async def test_a_restarted_instance_claims_its_own_unexpired_leases_at_once(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create("Mine")
        lease = await claim_next("instance-1", TTL)
        assert lease is not None
        # Another instance must wait for expiry; the same instance (restarted) need not.
        assert await claim_next("instance-2", TTL) is None
        again = await claim_next("instance-1", TTL)
        assert again is not None and again.project_id == project_id
        assert again.token == lease.token + 1


async def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced_off(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create("Contended")
        old = await claim_next("instance-1", TTL)
        assert old is not None
        await Project.filter(id=project_id).update(lease_expires_at=utcnow() - timedelta(seconds=1))
        new = await claim_next("instance-2", TTL)
        assert new is not None and new.taken_over_from == "instance-1"

        stale = RunJournal(old, await load_status(project_id), w.bus)
        step = stale.status.steps[0]
        with pytest.raises(LeaseLost):
            await stale.record(
                Change(
                    EventType.STEP_STARTED, step.name, {"status": StepState.RUNNING, "attempts": 1}
                )
            )
        with pytest.raises(LeaseLost):
            await renew(old)
        assert not await release(old)
        assert await ProgressEventRecord.filter(project_id=project_id).count() == 0
        row = await InitializationStep.get(project_id=project_id, name=step.name)
        assert row.status is StepState.PENDING
        project = await Project.get(id=project_id)
        assert (project.lease_owner, project.lease_token) == ("instance-2", new.token)


class BrokenTemplate:
    name = "render_template"

    async def run(self, ctx: StepContext) -> StepResult:
        raise PermanentStepError(
            "Template syntax error in app/main.py", code="TEMPLATE_RENDER_FAILED"
        )


async def test_a_permanent_step_failure_fails_the_step_and_the_project_with_its_code(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create("Broken")
        registry = default_registry().replaced(render_template=BrokenTemplate())
        await w.runner(registry=registry).run_until_idle()
        status = await load_status(project_id)
        assert status.status is ProjectState.FAILED
        failed = status.step("render_template")
        assert failed.status is StepState.FAILED
        assert failed.error_code == "TEMPLATE_RENDER_FAILED"
        assert status.error == "Render template failed: Template syntax error in app/main.py"
        assert status.step("create_project").status is StepState.COMPLETED
        assert status.step("create_environments").status is StepState.PENDING
        types = (
            await ProgressEventRecord.filter(project_id=project_id)
            .order_by("seq")
            .values_list("type", flat=True)
        )
        assert types[-2:] == [EventType.STEP_FAILED, EventType.INITIALIZATION_FAILED]
        assert (await Project.get(id=project_id)).lease_owner is None


async def test_a_run_starts_from_the_inputs_the_project_was_created_with(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        project_id = await w.create(
            "Inputs Ünïcode", parameters={"port": 9000}, environments=["dev", "prod"]
        )
        start = await load_run_start(project_id)
        project = await Project.get(id=project_id)
        assert start.status == await load_status(project_id)
        facts = start.facts
        assert (facts.id, facts.owner_id, facts.name, facts.slug, facts.template) == (
            project_id,
            w.owner.id,
            "Inputs Ünïcode",
            project.slug,
            "python-service",
        )
        assert facts.parameters == project.parameters and facts.parameters["port"] == 9000
        assert facts.environments == ("dev", "prod")
        assert facts.created_at == project.created_at and start.run_attempts == 0
