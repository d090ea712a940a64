"""Local subscribers of one process, fed by whichever bus this process uses."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from initflow.bus.base import Relay
from initflow.events import ProgressEvent

QUEUE_LIMIT = 1000

log = logging.getLogger("initflow.bus")


class LocalSubscription:
    """One subscriber's queue; overflow or a bus reconnect marks it as possibly lossy.

    ``get`` returns a queued event without suspending or allocating; only an empty
    queue parks the reader on one future (no task per event: thousands of
    subscribers each wake once per event).

    A caught-up reader may instead arm a relay (``relay_after``): events then go
    straight to it, in seq order, from the fan-out itself, without waking the
    reader. Relaying ends, and the reader wakes, at the first event that is out of
    order or refused (that one is queued), at a loss, or after a terminal event.
    """

    def __init__(self) -> None:
        self._queue: deque[ProgressEvent] = deque()
        self._lost_pending = False
        self._waiter: asyncio.Future[None] | None = None
        self._relay: Relay | None = None
        self._relayed_seq = 0
        self._relayed_terminal = False
        self.lost = False

    def relay_after(self, seq: int, relay: Relay) -> None:
        """Hand events ``seq + 1``, ``seq + 2``, … to ``relay`` until ``stop_relay``.

        Not while events are queued or a loss is pending: the reader takes those first.
        """
        self._relay = None if self._queue or self._lost_pending else relay
        self._relayed_seq = seq
        self._relayed_terminal = False

    def stop_relay(self) -> tuple[int, bool]:
        """(the last seq relayed, or the one relaying started after; whether it was terminal)."""
        self._relay = None
        return self._relayed_seq, self._relayed_terminal

    def deliver(self, event: ProgressEvent) -> None:
        if self._relay is not None and self._relayed(event, self._relay):
            return
        if len(self._queue) >= QUEUE_LIMIT:
            self.mark_lost()
            return
        self._queue.append(event)
        self._wake()

    def _relayed(self, event: ProgressEvent, relay: Relay) -> bool:
        if event.seq <= self._relayed_seq:
            return True  # sent already (the bus may repeat itself)
        sent = False
        if event.seq == self._relayed_seq + 1:
            try:
                sent = relay(event)
            except Exception:  # one subscriber's failure must not stop the fan-out
                log.exception("relaying an event failed; the subscriber's reader takes over")
        terminal = event.type.is_terminal
        if not sent or terminal:
            self._relay = None
            self._wake()
        if sent:
            self._relayed_seq = event.seq
            self._relayed_terminal = terminal
        return sent

    def mark_lost(self) -> None:
        self._relay = None
        self._lost_pending = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float) -> ProgressEvent | None:
        """The next event; ``None`` after ``timeout`` or on loss (then ``lost`` is set)."""
        self.lost = False
        if not self._queue and not self._lost_pending:
            await self._wait(timeout)
        if self._queue:
            return self._queue.popleft()
        self.lost = self._lost_pending
        self._lost_pending = False
        return None

    async def _wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(timeout, self._wake)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None


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
