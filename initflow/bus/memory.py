"""In-process bus for a single instance (no ``REDIS_URL``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from initflow.bus.fanout import CancelWatchers, LocalFanout, LocalSubscription
from initflow.events import ProgressEvent


class MemoryBus:
    def __init__(self) -> None:
        self.fanout = LocalFanout()
        self.cancels = CancelWatchers()
        self._work = asyncio.Event()

    async def publish(self, events: Sequence[ProgressEvent]) -> None:
        for event in events:
            self.fanout.deliver(event)

    async def announce_cancel(self, project_id: str) -> None:
        self.cancels.cancel(project_id)

    def watch_cancel(self, project_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        return self.cancels.watch(project_id)

    @asynccontextmanager
    async def subscribe(self, project_id: str) -> AsyncIterator[LocalSubscription]:
        subscription, _ = self.fanout.add(project_id)
        try:
            yield subscription
        finally:
            self.fanout.remove(project_id, subscription)

    async def wake_runners(self) -> None:
        self.notice_work()  # one process: waking its own runner is waking them all

    def notice_work(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def start(self) -> None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self.fanout.clear()
