"""Failures that explain themselves: transient retries, permanent failure and retry,
cancel, and steps that hang (issue #4)."""

from __future__ import annotations

import asyncio
from typing import Any

from initflow.errors import PermanentStepError, TransientStepError
from initflow.models import AuditEntry, Environment
from initflow.runner.registry import StepContext, StepResult
from initflow.runner.steps import default_registry
from initflow.runner.steps.render_template import RenderTemplate
from tests.conftest import Api

RETRY = """mutation($id: ID!) { retryInitialization(projectId: $id) {
    status { status progress steps { name status } } userErrors { field message code } } }"""
CANCEL = """mutation($id: ID!) { cancelInitialization(projectId: $id) {
    status { status progress steps { name status } } userErrors { field message code } } }"""


class FlakyRender(RenderTemplate):
    """Fails transiently ``failures`` times, then renders for real."""

    def __init__(self, failures: int) -> None:
        self.remaining = failures

    async def run(self, ctx: StepContext) -> StepResult:
        if self.remaining > 0:
            self.remaining -= 1
            raise TransientStepError("Template store unreachable", code="TEMPLATE_STORE_DOWN")
        return await super().run(ctx)


class BrokenOnce(RenderTemplate):
    """Fails permanently on its first run (a bad template), then works (it was fixed)."""

    def __init__(self) -> None:
        self.broken = True

    async def run(self, ctx: StepContext) -> StepResult:
        if self.broken:
            self.broken = False
            raise PermanentStepError("app/main.py: unexpected '}'", code="TEMPLATE_RENDER_FAILED")
        return await super().run(ctx)


class Hanging:
    name = "render_template"

    async def run(self, ctx: StepContext) -> StepResult:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_step_failing_twice_transiently_then_succeeding_is_invisible_to_the_user(
    api_for: Any,
) -> None:
    registry = default_registry().replaced(render_template=FlakyRender(failures=2))
    api: Api = await api_for(registry=registry)
    project_id = await api.create_project("Flaky")
    # afterSeq 0: every event from the first, however far the run got before we listen.
    async with api.subscribe(project_id, after_seq=0) as stream:
        events = await stream.events_until_complete(timeout=60)
    types = [e["type"] for e in events]
    assert types.count("STEP_RETRYING") == 2
    assert "STEP_FAILED" not in types and "INITIALIZATION_FAILED" not in types
    assert types[-1] == "INITIALIZATION_COMPLETED"
    retrying = next(e for e in events if e["type"] == "STEP_RETRYING")
    assert retrying["status"]["status"] == "INITIALIZING"
    final = await api.status(project_id)
    render = next(s for s in final["steps"] if s["name"] == "render_template")
    assert render["attempts"] == 3
    assert render["status"] == "COMPLETED" and render["error"] is None
    assert final["status"] == "ACTIVE"


async def test_a_permanent_failure_then_retry_resumes_from_the_failed_step(api_for: Any) -> None:
    registry = default_registry().replaced(render_template=BrokenOnce())
    api: Api = await api_for(registry=registry)
    project_id = await api.create_project("Fixable")
    async with api.subscribe(project_id, after_seq=0) as stream:
        events = await stream.events_until_complete()
    assert [e["type"] for e in events][-2:] == ["STEP_FAILED", "INITIALIZATION_FAILED"]
    failed = await api.status(project_id)
    assert failed["status"] == "FAILED"
    assert failed["error"] == "Render template failed: app/main.py: unexpected '}'"
    step = next(s for s in failed["steps"] if s["name"] == "render_template")
    assert step["error"] == {
        "code": "TEMPLATE_RENDER_FAILED",
        "message": "app/main.py: unexpected '}'",
    }
    first_step_done = failed["steps"][0]["completedAt"]

    retried, again = await asyncio.gather(
        api.data(RETRY, id=project_id), api.data(RETRY, id=project_id)
    )
    # A stream of a finished run completes; after the retry the client re-subscribes.
    async with api.subscribe(project_id, after_seq=failed["seq"]) as resumed:
        after_retry = await resumed.events_until_complete()
    # A double click sends one retry: one INITIALIZATION_RETRIED, both calls succeed.
    assert [e["type"] for e in after_retry].count("INITIALIZATION_RETRIED") == 1
    assert retried["retryInitialization"]["userErrors"] == []
    assert again["retryInitialization"]["userErrors"] == []
    assert after_retry[-1]["type"] == "INITIALIZATION_COMPLETED"
    final = await api.status(project_id)
    assert final["status"] == "ACTIVE"
    assert final["steps"][0]["completedAt"] == first_step_done
    assert final["steps"][0]["attempts"] == 1
    assert await AuditEntry.filter(action="project.retry_requested").count() == 1

    done = (await api.data(RETRY, id=project_id))["retryInitialization"]
    assert [e["code"] for e in done["userErrors"]] == ["NOT_RETRYABLE"]


async def test_cancel_mid_step_stops_the_run_keeps_what_was_created_and_can_be_retried(
    api_for: Any,
) -> None:
    api: Api = await api_for(step_delay_seconds=0.6)
    project_id = await api.create_project("Cancel Me")
    async with api.subscribe(project_id) as stream:
        while True:
            event = await stream.next_event()
            assert event is not None
            if event["type"] == "STEP_PROGRESS" and event["step"]["name"] == "create_environments":
                break
        canceled = (await api.data(CANCEL, id=project_id))["cancelInitialization"]
        rest = await stream.events_until_complete()
    assert canceled["userErrors"] == []
    assert canceled["status"]["status"] == "CANCELED"
    assert rest[-1]["type"] == "INITIALIZATION_CANCELED"
    status = await api.status(project_id)
    assert status["status"] == "CANCELED" and status["error"] is None
    states = [s["status"] for s in status["steps"]]
    assert states[:2] == ["COMPLETED", "COMPLETED"]
    assert "RUNNING" not in states
    kept = await Environment.filter(project_id=project_id).count()
    assert kept >= 1, "what was created stays"
    # The runner stopped: nothing is written after the cancel.
    assert (await api.status(project_id))["seq"] == status["seq"] == rest[-1]["seq"]

    again = (await api.data(CANCEL, id=project_id))["cancelInitialization"]
    assert [e["code"] for e in again["userErrors"]] == ["NOT_CANCELABLE"]
    await api.data(RETRY, id=project_id)
    async with api.subscribe(project_id, after_seq=status["seq"]) as resumed:
        resumed_events = await resumed.events_until_complete()
    assert resumed_events[-1]["type"] == "INITIALIZATION_COMPLETED"
    final = await api.status(project_id)
    assert final["status"] == "ACTIVE"
    assert await Environment.filter(project_id=project_id).count() == 3


async def test_a_hanging_step_is_reported_stalled_then_times_out_and_fails(api_for: Any) -> None:
    registry = default_registry().replaced(render_template=Hanging())
    api: Api = await api_for(registry=registry, step_timeout_seconds=1.0, stall_after_seconds=0.3)
    project_id = await api.create_project("Hangs")
    query = """query($id: ID!) { projectStatus(projectId: $id) {
        status steps { name status stalledSince error { code } } } }"""
    stalled = None
    seen: list[dict[str, Any]] = []
    # afterSeq 0: every event from the first, however far the run got before we listen.
    async with api.subscribe(project_id, after_seq=0) as stream:
        while True:
            event = await stream.next_event(timeout=60)
            assert event is not None
            seen.append(event)
            if event["type"] == "STEP_STARTED" and event["step"]["name"] == "render_template":
                break
        for _ in range(200):
            status = (await api.data(query, id=project_id))["projectStatus"]
            render = status["steps"][1]
            if render["stalledSince"] is not None:
                stalled = render
                break
            await asyncio.sleep(0.05)
        events = await stream.events_until_complete(timeout=60)
    assert stalled is not None and stalled["status"] == "RUNNING"
    types = [e["type"] for e in seen + events]
    assert types.count("STEP_RETRYING") == 2
    assert types[-1] == "INITIALIZATION_FAILED"
    final = await api.status(project_id)
    render = final["steps"][1]
    assert render["status"] == "FAILED"
    assert render["error"]["code"] == "STEP_TIMEOUT"
    assert render["attempts"] == 3
