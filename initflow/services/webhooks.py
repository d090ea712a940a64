"""Outgoing notifications: recorded in the step's transaction, sent after it.

A delivery row is keyed by ``<project>:<event>``; that key is also the
``Idempotency-Key`` header, so a receiver that sees a delivery twice (a crash
between send and record) sees the same key.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from uuid import UUID

import aiohttp
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from initflow.clock import utcnow
from initflow.metrics import Metrics
from initflow.models import Project, WebhookDelivery
from initflow.settings import Settings

log = logging.getLogger("initflow.webhooks")

MAX_ATTEMPTS = 8
TIMEOUT = aiohttp.ClientTimeout(total=10)
CLAIM_SECONDS = 30


async def record_delivery(
    settings: Settings, project_id: UUID, event: str, connection: BaseDBAsyncClient
) -> bool:
    """Queue a notification when a webhook URL is configured; idempotent."""
    if settings.webhook_url is None:
        return False
    await WebhookDelivery.get_or_create(
        idempotency_key=f"{project_id}:{event}",
        defaults={
            "project_id": project_id,
            "event": event,
            "url": settings.webhook_url,
            "created_at": utcnow(),
        },
        using_db=connection,
    )
    return True


async def _claim(delivery: WebhookDelivery) -> bool:
    """Take the next attempt of ``delivery`` (compare-and-set on ``attempts``).

    The claim pushes ``next_attempt_at`` past the send timeout, so a sender that
    dies mid-send leaves the delivery to be retried, and two instances do not
    send the same attempt.
    """
    claimed = await WebhookDelivery.filter(
        id=delivery.id, status="pending", attempts=delivery.attempts
    ).update(
        attempts=delivery.attempts + 1,
        next_attempt_at=utcnow() + timedelta(seconds=CLAIM_SECONDS),
    )
    if claimed == 1:
        delivery.attempts += 1
    return claimed == 1


def backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(300, 2**attempts))


async def deliver_pending(
    session: aiohttp.ClientSession, metrics: Metrics | None = None, limit: int = 20
) -> int:
    """Send due deliveries once each; returns how many were delivered."""
    now = utcnow()
    due = await WebhookDelivery.filter(
        Q(status="pending") & (Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now))
    ).limit(limit)
    delivered = 0
    for delivery in due:
        if not await _claim(delivery):
            continue  # another instance is sending it
        project = await Project.get(id=delivery.project_id)  # type: ignore[attr-defined]
        body = {
            "event": delivery.event,
            "projectId": str(project.id),
            "name": project.name,
            "status": project.status.value,
            "error": project.initialization_error,
        }
        headers = {"Idempotency-Key": delivery.idempotency_key}
        try:
            async with session.post(delivery.url, json=body, headers=headers, timeout=TIMEOUT) as r:
                if r.status >= 300:
                    raise aiohttp.ClientResponseError(
                        r.request_info, (), status=r.status, message=r.reason or ""
                    )
        except (aiohttp.ClientError, TimeoutError) as exc:
            delivery.last_error = f"{type(exc).__name__}: {exc}"[:500]
            delivery.next_attempt_at = utcnow() + backoff(delivery.attempts)
            if metrics is not None:
                metrics.webhook_failures.inc()
            if delivery.attempts >= MAX_ATTEMPTS:
                delivery.status = "failed"
            log.warning(
                "webhook delivery %s failed: %s",
                delivery.idempotency_key,
                exc,
                extra={"action": "webhook_failed", "project_id": str(project.id)},
            )
        else:
            delivery.status = "delivered"
            delivery.delivered_at = utcnow()
            delivered += 1
        await delivery.save()
    return delivered
