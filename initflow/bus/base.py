"""The bus protocol shared by the in-process and the Redis implementation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from initflow.events import ProgressEvent

Relay = Callable[[ProgressEvent], bool]
"""Sends one event to the subscriber at once; False: it could not (the reader sends it)."""


class BusSubscription(Protocol):
    async def get(self, timeout: float) -> ProgressEvent | None:
        """The next event, or ``None`` after ``timeout`` or when events may have been lost."""
        ...

    @property
    def lost(self) -> bool:
        """Whether the last ``None`` from ``get`` meant a possible loss (not a quiet period)."""
        ...

    def relay_after(self, seq: int, relay: Relay) -> None:
        """Until ``stop_relay``, hand the events after ``seq`` to ``relay`` as they arrive,
        in order, instead of queueing them; an event out of order or refused (``relay``
        returned False), a loss, or a terminal event ends relaying and wakes ``get``."""
        ...

    def stop_relay(self) -> tuple[int, bool]:
        """The last seq relayed (or the one relaying started after) and whether it ended
        the stream."""
        ...


class ProgressBus(Protocol):
    async def publish(self, events: Sequence[ProgressEvent]) -> None:
        """Deliver to current subscribers, in order; call only after the events are committed."""
        ...

    async def announce_cancel(self, project_id: str) -> None:
        """Tell the runner executing ``project_id`` (on any instance) that it was canceled."""
        ...

    def watch_cancel(self, project_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        """An event set when ``project_id`` is canceled, while the context is open."""
        ...

    def subscribe(self, project_id: str) -> AbstractAsyncContextManager[BusSubscription]:
        """Entered only once the subscription is live, so no later publish is missed."""
        ...

    async def wake_runners(self) -> None:
        """Tell runners that new work may be claimable (a hint; the database decides)."""
        ...

    def notice_work(self) -> None:
        """Wake this process's runner loop only (it freed a slot of its own)."""
        ...

    async def wait_for_work(self, timeout: float) -> None:
        """Return on a wake-up or after ``timeout``, whichever is first."""
        ...

    async def start(self) -> None:
        """Connect (and confirm upstream subscriptions) before serving."""
        ...

    async def ping(self) -> bool:
        """Whether the bus can deliver right now (readiness)."""
        ...

    async def close(self) -> None: ...
