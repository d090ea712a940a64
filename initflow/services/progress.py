"""The progress stream behind ``initProgress``: snapshot, then live, never a gap.

Order matters: subscribe to the bus first (entered only once live), then read
the snapshot, so any change committed after the snapshot arrives on the bus.
Live events at or below the last delivered ``seq`` are dropped; a gap, a
possible loss or a quiet period is filled from ``progress_events``, so the
stream is complete even though the bus is at-most-once.

A caller may pass a ``relay`` (the WebSocket layer does): while the stream is
caught up, live events in order go to it straight from the bus's fan-out
instead of through this generator; anything else (a gap, a loss, an event the
relay refuses) wakes the generator, which carries on from the last seq relayed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from uuid import UUID

from initflow.bus import BusSubscription, ProgressBus, Relay
from initflow.clock import utcnow
from initflow.errors import InvalidInput, NotFound
from initflow.events import EventType, ProgressEvent
from initflow.metrics import Metrics
from initflow.models import ProgressEventRecord, Project
from initflow.models.journal_writes import is_postgres
from initflow.services.snapshots import load_status

RECHECK_SECONDS = 5.0
REPLAY_BATCH = 500
LAST_SEQ_SHARED_FOR = 1.0


async def read_events(project_id: UUID, after: int) -> list[ProgressEvent]:
    rows = (
        await ProgressEventRecord.filter(project_id=project_id, seq__gt=after)
        .order_by("seq")
        .limit(REPLAY_BATCH)
    )
    return [ProgressEvent.from_payload_json(str(project_id), r.seq, r.payload) for r in rows]


async def read_last_seq(project_id: UUID) -> int:
    connection = Project._meta.db
    postgres = is_postgres(connection)
    sql = "SELECT last_seq FROM projects WHERE id = " + ("$1" if postgres else "?")
    _, rows = await connection.execute_query(sql, [project_id if postgres else str(project_id)])
    return int(rows[0]["last_seq"]) if rows else 0


class SharedLastSeq:
    """``projects.last_seq`` read at most once a second per project, shared by its streams.

    A quiet stream re-checks the log in case the bus lost an event; with thousands
    of subscribers on a few projects, one read per project serves them all.
    """

    def __init__(self, max_age: float = LAST_SEQ_SHARED_FOR) -> None:
        self._max_age = max_age
        self._reads: dict[UUID, tuple[float, asyncio.Future[int]]] = {}

    async def get(self, project_id: UUID) -> int:
        now = time.monotonic()
        entry = self._reads.get(project_id)
        if entry is None or now - entry[0] > self._max_age or entry[1].cancelled():
            if len(self._reads) > 10_000:
                self._reads = {p: e for p, e in self._reads.items() if now - e[0] <= self._max_age}
            entry = (now, asyncio.ensure_future(read_last_seq(project_id)))
            self._reads[project_id] = entry
        return await asyncio.shield(entry[1])


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
        self._last_seq = SharedLastSeq()

    async def events(
        self,
        project_id: UUID,
        owner_id: UUID,
        after_seq: int | None,
        relay: Relay | None = None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        """NotFound unless the project is the owner's (checked before anything is sent)."""
        finished_at: int | None = None
        if after_seq is not None:
            finished_at = await self._check_after_seq(project_id, owner_id, after_seq)
        if self._metrics is not None:
            self._metrics.active_subscriptions.inc()
        try:
            observed = None if relay is None else self._observed(relay)
            stream = self._stream(project_id, owner_id, after_seq, finished_at, observed)
            async with aclosing(stream):
                async for event in stream:
                    yield event
        finally:
            if self._metrics is not None:
                self._metrics.active_subscriptions.dec()

    async def _check_after_seq(
        self, project_id: UUID, owner_id: UUID, after_seq: int
    ) -> int | None:
        """Validates ``afterSeq``; returns the last seq if the project has finished."""
        project = await Project.filter(id=project_id, owner_id=owner_id).first()
        if project is None:
            raise NotFound("Project not found")
        if not 0 <= after_seq <= project.last_seq:
            raise InvalidInput.one(
                ["afterSeq"],
                f"afterSeq must be between 0 and the project's last seq ({project.last_seq}).",
                "INVALID_VALUE",
            )
        return project.last_seq if project.status.is_terminal else None

    def _observed(self, relay: Relay) -> Relay:
        """``relay`` with each event it sends counted in the delivery latency metric."""

        def send(event: ProgressEvent) -> bool:
            if not relay(event):
                return False
            self._observe_latency(event)
            if self._metrics is not None:
                self._metrics.events_relayed.inc()
            return True

        return send

    def _observe_latency(self, event: ProgressEvent) -> None:
        if self._metrics is not None:
            latency = (utcnow() - event.at).total_seconds()
            self._metrics.event_latency.observe(max(0.0, latency))

    async def _stream(
        self,
        project_id: UUID,
        owner_id: UUID,
        after_seq: int | None,
        finished_at: int | None,
        relay: Relay | None,
    ) -> AsyncGenerator[ProgressEvent, None]:
        async with self._bus.subscribe(str(project_id)) as live:
            if after_seq is None:
                status = await load_status(project_id, owner_id)  # NotFound if not theirs
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
                if finished_at == last:
                    return
            # With afterSeq, replay what the log holds beyond it before listening live.
            # After a snapshot there is nothing to replay: the bus was live before the
            # snapshot was read, so every later commit is on it (or loss is flagged).
            read_log = after_seq is not None
            pending: ProgressEvent | None = None
            while True:
                if read_log:
                    for event in await self._backfill(project_id, last):
                        yield event
                        last = event.seq
                        if event.type.is_terminal:
                            return
                if pending is not None and pending.seq == last + 1:
                    self._observe_latency(pending)
                    yield pending
                    last = pending.seq
                    if pending.type.is_terminal:
                        return
                last, pending, finished = await self._next_live(project_id, live, last, relay)
                if finished:
                    return
                read_log = pending is None or pending.seq > last + 1

    async def _backfill(self, project_id: UUID, after: int) -> list[ProgressEvent]:
        events: list[ProgressEvent] = []
        while True:
            batch = await read_events(project_id, after)
            events.extend(batch)
            if len(batch) < REPLAY_BATCH:
                return events
            after = batch[-1].seq

    async def _next_live(
        self,
        project_id: UUID,
        live: BusSubscription,
        last: int,
        relay: Relay | None,
    ) -> tuple[int, ProgressEvent | None, bool]:
        """(last seq sent, the next live event newer than it or ``None`` for "read the
        log", whether the stream has ended); events sent by ``relay`` meanwhile count,
        and a wait during which the relay sent something was not a quiet one."""
        while True:
            if relay is not None:
                live.relay_after(last, relay)
            event = await live.get(self._recheck)
            if relay is not None:
                relayed, finished = live.stop_relay()
                if finished:
                    return relayed, None, True
                flowed, last = relayed > last, relayed
                if flowed and event is None and not live.lost:
                    continue
            if event is not None:
                if event.seq > last:
                    return last, event, False
            elif live.lost or await self._last_seq.get(project_id) > last:
                return last, None, False
