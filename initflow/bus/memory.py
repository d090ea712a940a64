"""In-process bus for a single instance (no ``REDIS_URL``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from initflow.events import ProgressEvent

QUEUE_LIMIT = 1000


class MemorySubscription:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[ProgressEvent] = asyncio.Queue(QUEUE_LIMIT)
        self._lost = False

    def deliver(self, event: ProgressEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._lost = True

    async def get(self, timeout: float) -> ProgressEvent | None:
        if self._lost and self._queue.empty():
            self._lost = False
            return None
        try:
            return await asyncio.wait_for(self._queue.get(), timeout)
        except TimeoutError:
            return None


class MemoryBus:
    def __init__(self) -> None:
        self._subscribers: dict[str, set[MemorySubscription]] = {}
        self._work = asyncio.Event()

    async def publish(self, event: ProgressEvent) -> None:
        for subscription in tuple(self._subscribers.get(event.project_id, ())):
            subscription.deliver(event)

    @asynccontextmanager
    async def subscribe(self, project_id: str) -> AsyncIterator[MemorySubscription]:
        subscription = MemorySubscription()
        self._subscribers.setdefault(project_id, set()).add(subscription)
        try:
            yield subscription
        finally:
            subscribers = self._subscribers.get(project_id)
            if subscribers is not None:
                subscribers.discard(subscription)
                if not subscribers:
                    del self._subscribers[project_id]

    def subscriber_count(self, project_id: str) -> int:
        return len(self._subscribers.get(project_id, ()))

    async def wake_runners(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def close(self) -> None:
        self._subscribers.clear()
