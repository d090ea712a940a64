"""``/metrics`` in Prometheus text format; database gauges are refreshed per scrape."""

from __future__ import annotations

from datetime import timedelta

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from tortoise.expressions import Q
from tortoise.functions import Count

from initflow.clock import utcnow
from initflow.metrics import Metrics
from initflow.models import InitializationStep, Project
from initflow.states import ProjectState, StepState


async def refresh_database_gauges(metrics: Metrics, stall_after: timedelta) -> None:
    now = utcnow()
    counts = {
        row["status"]: row["n"]
        for row in await Project.all()
        .annotate(n=Count("id"))
        .group_by("status")
        .values("status", "n")
    }
    for state in ProjectState:
        metrics.projects.labels(state=state.value).set(counts.get(state, 0))
    metrics.stalled_steps.set(
        await InitializationStep.filter(
            status=StepState.RUNNING, updated_at__lt=now - stall_after
        ).count()
    )
    queued = (
        await Project.filter(
            Q(status=ProjectState.INITIALIZING)
            & (Q(lease_owner__isnull=True) | Q(lease_expires_at__lt=now))
            & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
        )
        .order_by("updated_at")
        .first()
        .values("updated_at")
    )
    age = (now - queued["updated_at"]).total_seconds() if queued else 0.0
    metrics.oldest_queued_run_age.set(max(0.0, age))


def metrics_routes(metrics: Metrics, stall_after: timedelta) -> list[web.RouteDef]:
    async def scrape(_: web.Request) -> web.Response:
        await refresh_database_gauges(metrics, stall_after)
        body = generate_latest(metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    return [web.get("/metrics", scrape)]
