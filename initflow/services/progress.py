"""The progress stream behind ``initProgress``: snapshot, then live, never a gap.

Order matters: subscribe to the bus first (entered only once live), then read
the snapshot, so any change committed after the snapshot arrives on the bus.
Live events at or below the last delivered ``seq`` are dropped; a gap, a
possible loss or a quiet period is filled from ``progress_events``, so the
stream is complete even though the bus is at-most-once.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from uuid import UUID

from initflow.bus import BusSubscription, ProgressBus
from initflow.clock import utcnow
from initflow.errors import InvalidInput, NotFound
from initflow.events import EventType, ProgressEvent
from initflow.metrics import Metrics
from initflow.models import ProgressEventRecord, Project
from initflow.services.snapshots import load_status

RECHECK_SECONDS = 5.0
REPLAY_BATCH = 500


async def read_events(project_id: UUID, after: int) -> list[ProgressEvent]:
    rows = (
        await ProgressEventRecord.filter(project_id=project_id, seq__gt=after)
        .order_by("seq")
        .limit(REPLAY_BATCH)
    )
    return [ProgressEvent.from_payload(str(project_id), r.seq, r.payload) for r in rows]


class ProgressStream:
    def __init__(
        self,
        bus: ProgressBus,
        metrics: Metrics | None = None,
        recheck_seconds: float = RECHECK_SECONDS,
    ) -> None:
        self._bus = bus
        self._metrics = metrics
        self._recheck = recheck_seconds

    async def events(
        self, project_id: UUID, owner_id: UUID, after_seq: int | None
    ) -> AsyncGenerator[ProgressEvent, None]:
        project = await Project.filter(id=project_id, owner_id=owner_id).first()
        if project is None:
            raise NotFound("Project not found")
        if after_seq is not None and not 0 <= after_seq <= project.last_seq:
            raise InvalidInput.one(
                ["afterSeq"],
                f"afterSeq must be between 0 and the project's last seq ({project.last_seq}).",
                "INVALID_VALUE",
            )
        if self._metrics is not None:
            self._metrics.active_subscriptions.inc()
        try:
            async with aclosing(self._stream(project, after_seq)) as stream:
                async for event in stream:
                    yield event
        finally:
            if self._metrics is not None:
                self._metrics.active_subscriptions.dec()

    async def _stream(
        self, project: Project, after_seq: int | None
    ) -> AsyncGenerator[ProgressEvent, None]:
        project_id = project.id
        async with self._bus.subscribe(str(project_id)) as live:
            if after_seq is None:
                status = await load_status(project_id)
                current = status.current_step
                yield ProgressEvent(
                    str(project_id),
                    status.seq,
                    EventType.SNAPSHOT,
                    utcnow(),
                    current.name if current else None,
                    status,
                )
                if status.status.is_terminal:
                    return
                last = status.seq
            else:
                last = after_seq
                if project.status.is_terminal and last == project.last_seq:
                    return
            # Replay whatever the log holds beyond ``last`` before listening live.
            pending: ProgressEvent | None = None
            while True:
                if pending is None or pending.seq > last + 1:
                    for event in await self._backfill(project_id, last):
                        yield event
                        last = event.seq
                        if event.type.is_terminal:
                            return
                if pending is not None and pending.seq == last + 1:
                    if self._metrics is not None:
                        self._metrics.event_latency.observe(
                            max(0.0, (utcnow() - pending.at).total_seconds())
                        )
                    yield pending
                    last = pending.seq
                    if pending.type.is_terminal:
                        return
                pending = await self._next_live(live, last)

    async def _backfill(self, project_id: UUID, after: int) -> list[ProgressEvent]:
        events: list[ProgressEvent] = []
        while True:
            batch = await read_events(project_id, after)
            events.extend(batch)
            if len(batch) < REPLAY_BATCH:
                return events
            after = batch[-1].seq

    async def _next_live(self, live: BusSubscription, last: int) -> ProgressEvent | None:
        """The next live event newer than ``last``; ``None`` means "check the log"."""
        while True:
            event = await live.get(self._recheck)
            if event is None or event.seq > last:
                return event
