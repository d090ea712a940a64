"""Local subscribers of one process, fed by whichever bus this process uses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from initflow.events import ProgressEvent

QUEUE_LIMIT = 1000


class LocalSubscription:
    """One subscriber's queue; overflow or a bus reconnect marks it as possibly lossy."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[ProgressEvent] = asyncio.Queue(QUEUE_LIMIT)
        self._lost = asyncio.Event()
        self.lost = False

    def deliver(self, event: ProgressEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._lost.set()

    def mark_lost(self) -> None:
        self._lost.set()

    async def get(self, timeout: float) -> ProgressEvent | None:
        self.lost = False
        if self._lost.is_set() and self._queue.empty():
            self._lost.clear()
            self.lost = True
            return None
        queued = asyncio.ensure_future(self._queue.get())
        lost = asyncio.ensure_future(self._lost.wait())
        try:
            done, _ = await asyncio.wait(
                {queued, lost}, timeout=timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            lost.cancel()
            if not queued.done():
                queued.cancel()
        if queued in done:
            return queued.result()
        self.lost = lost in done
        self._lost.clear()
        return None


class LocalFanout:
    """Subscribers by project id; ``first``/``last`` tell the bus when to (un)subscribe upstream."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[LocalSubscription]] = {}

    def add(self, project_id: str) -> tuple[LocalSubscription, bool]:
        subscribers = self._subscribers.setdefault(project_id, set())
        subscription = LocalSubscription()
        subscribers.add(subscription)
        return subscription, len(subscribers) == 1

    def remove(self, project_id: str, subscription: LocalSubscription) -> bool:
        subscribers = self._subscribers.get(project_id)
        if subscribers is None:
            return False
        subscribers.discard(subscription)
        if subscribers:
            return False
        del self._subscribers[project_id]
        return True

    def deliver(self, event: ProgressEvent) -> None:
        for subscription in tuple(self._subscribers.get(event.project_id, ())):
            subscription.deliver(event)

    def mark_all_lost(self) -> None:
        for subscribers in self._subscribers.values():
            for subscription in subscribers:
                subscription.mark_lost()

    def projects(self) -> list[str]:
        return list(self._subscribers)

    def count(self, project_id: str | None = None) -> int:
        if project_id is not None:
            return len(self._subscribers.get(project_id, ()))
        return sum(len(s) for s in self._subscribers.values())

    def clear(self) -> None:
        self._subscribers.clear()


class CancelWatchers:
    """Executors waiting to hear that their run was canceled (one control channel)."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = {}

    @asynccontextmanager
    async def watch(self, project_id: str) -> AsyncIterator[asyncio.Event]:
        event = asyncio.Event()
        self._events.setdefault(project_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._events.get(project_id, set())
            watchers.discard(event)
            if not watchers:
                self._events.pop(project_id, None)

    def cancel(self, project_id: str) -> None:
        for event in self._events.get(project_id, ()):
            event.set()
