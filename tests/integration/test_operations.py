"""The operator's view: health, readiness, metrics, alert rules, webhooks, audit log."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from initflow.app import RUNNER
from initflow.errors import PermanentStepError
from initflow.logs import JsonFormatter
from initflow.models import AuditEntry, WebhookDelivery
from initflow.runner.registry import StepContext, StepResult
from initflow.runner.steps import default_registry
from initflow.step_plan import STEP_NAMES
from tests.conftest import Api

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yml"


class Receiver:
    """A real HTTP webhook receiver that fails its first ``failures`` requests."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.deliveries: list[tuple[str, dict[str, Any]]] = []
        self.arrived = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append((request.headers["Idempotency-Key"], await request.json()))
        self.arrived.set()
        if self.failures > 0:
            self.failures -= 1
            return web.Response(status=503)
        return web.Response(status=204)

    async def wait_for(self, count: int, timeout: float = 30) -> None:
        async def enough() -> None:
            while len(self.deliveries) < count:
                self.arrived.clear()
                await self.arrived.wait()

        await asyncio.wait_for(enough(), timeout)


async def start_receiver(receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server = TestServer(app)
    await server.start_server()
    return server


async def test_health_and_readiness_report_database_bus_and_runner(api_for: Any) -> None:
    api: Api = await api_for()
    assert (await api.client.get("/healthz")).status == 200
    ready = await api.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200, body
    assert body["checks"] == {"database": "ok", "bus": "ok", "runner": "ok"}
    # A dead claim loop turns readiness red.
    runner = api.client.app[RUNNER]
    assert runner._loop_task is not None
    runner._loop_task.cancel()
    await asyncio.gather(runner._loop_task, return_exceptions=True)
    not_ready = await api.client.get("/readyz")
    assert not_ready.status == 503
    assert (await not_ready.json())["checks"]["runner"].startswith("error")


async def test_every_metric_an_alert_rule_names_is_exported(api_for: Any) -> None:
    api: Api = await api_for()
    project_id = await api.create_project("Measured")
    async with api.subscribe(project_id) as stream:
        await stream.events_until_complete()
    response = await api.client.get("/metrics")
    assert response.status == 200
    exported = await response.text()
    named = set(re.findall(r"\binitflow_[a-z_]+", ALERTS.read_text()))
    assert named, "the rules name initflow metrics"
    declared = set(re.findall(r"^# TYPE (initflow_[a-z_]+?)(?:_total)? ", exported, re.M))
    families = {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in named}
    missing = families - declared
    assert missing == set()
    assert 'initflow_projects{state="active"} 1.0' in exported
    assert re.search(r'initflow_step_duration_seconds_count\{step="push_template"\} 1\.0', exported)
    assert "initflow_runs_completed_total 1.0" in exported


class AlwaysBroken:
    name = "render_template"

    async def run(self, ctx: StepContext) -> StepResult:
        raise PermanentStepError("Bad template", code="TEMPLATE_RENDER_FAILED")


async def test_completion_and_failure_are_posted_once_each_with_stable_idempotency_keys(
    api_for: Any,
) -> None:
    receiver = Receiver(failures=1)
    server = await start_receiver(receiver)
    try:
        url = str(server.make_url("/hook"))
        registry = default_registry().replaced(render_template=AlwaysBroken())
        api: Api = await api_for(webhook_url=url, registry=registry, poll_interval_seconds=0.1)
        project_id = await api.create_project("Notify Failure")
        async with api.subscribe(project_id) as stream:
            await stream.events_until_complete()
        # The first attempt gets a 503; the retry (after backoff) delivers the same key.
        await receiver.wait_for(2)
        keys = [key for key, _ in receiver.deliveries]
        assert keys == [f"{project_id}:initialization.failed"] * 2
        body = receiver.deliveries[-1][1]
        assert body["event"] == "initialization.failed" and body["status"] == "failed"
        for _ in range(100):  # the sender records the outcome after the response
            delivery = await WebhookDelivery.get(project_id=project_id)
            if delivery.status == "delivered":
                break
            await asyncio.sleep(0.05)
        assert (delivery.status, delivery.attempts) == ("delivered", 2)
        actions = (
            await AuditEntry.filter(project_id=project_id)
            .order_by("id")
            .values_list("action", "actor")
        )
        assert actions == [("project.created", "alice"), ("project.failed", "initflow")]
    finally:
        await server.close()


async def test_a_completed_project_is_announced_once(api_for: Any) -> None:
    receiver = Receiver()
    server = await start_receiver(receiver)
    try:
        api: Api = await api_for(
            webhook_url=str(server.make_url("/hook")), poll_interval_seconds=0.1
        )
        project_id = await api.create_project("Notify Success")
        async with api.subscribe(project_id) as stream:
            await stream.events_until_complete()
        await receiver.wait_for(1)
        assert [k for k, _ in receiver.deliveries] == [f"{project_id}:initialization.completed"]
        assert receiver.deliveries[0][1]["status"] == "active"
    finally:
        await server.close()


async def test_every_runner_log_line_carries_action_project_and_step(
    api_for: Any, caplog: Any
) -> None:
    caplog.set_level(logging.INFO, logger="initflow.runner")
    api: Api = await api_for()
    project_id = await api.create_project("Logged")
    async with api.subscribe(project_id) as stream:
        await stream.events_until_complete()
    records = [r for r in caplog.records if r.name == "initflow.runner"]
    assert records
    for record in records:
        assert getattr(record, "action", None), record.getMessage()
        assert getattr(record, "project_id", None) == project_id
        line = json.loads(JsonFormatter().format(record))
        assert line["action"] == record.action and line["project_id"] == project_id
    steps = {getattr(r, "step", None) for r in records if r.action == "step_done"}
    assert steps == set(STEP_NAMES)
