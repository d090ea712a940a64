"""One subscriber's queue: order, timeouts, and loss that the stream must repair from the log."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from initflow.bus.fanout import QUEUE_LIMIT, LocalSubscription
from initflow.events import EventType, ProgressEvent
from initflow.states import ProjectState
from initflow.status import StatusView

AT = datetime(2026, 1, 1, tzinfo=UTC)


def event(seq: int) -> ProgressEvent:
    status = StatusView("p", ProjectState.INITIALIZING, (), None, seq, AT)
    return ProgressEvent("p", seq, EventType.STEP_PROGRESS, AT, None, status)


async def test_queued_events_come_out_in_order() -> None:
    subscription = LocalSubscription()
    for seq in (1, 2, 3):
        subscription.deliver(event(seq))
    received = [await subscription.get(timeout=5) for _ in range(3)]
    assert [e.seq for e in received if e is not None] == [1, 2, 3]
    assert not subscription.lost


async def test_a_quiet_queue_times_out_without_reporting_loss() -> None:
    subscription = LocalSubscription()
    assert await subscription.get(timeout=0.01) is None
    assert not subscription.lost


async def test_a_delivery_wakes_a_waiting_reader() -> None:
    subscription = LocalSubscription()
    # Delivered only after this task has parked in get() on the empty queue.
    asyncio.get_running_loop().call_soon(subscription.deliver, event(7))
    async with asyncio.timeout(5):  # in this task, so get() parks before the delivery runs
        received = await subscription.get(timeout=30)
    assert received is not None and received.seq == 7


async def test_overflow_is_reported_as_loss_after_the_queued_events() -> None:
    subscription = LocalSubscription()
    for seq in range(1, QUEUE_LIMIT + 2):
        subscription.deliver(event(seq))
    drained = [await subscription.get(timeout=5) for _ in range(QUEUE_LIMIT)]
    assert [e.seq for e in drained if e is not None] == list(range(1, QUEUE_LIMIT + 1))
    assert await subscription.get(timeout=5) is None
    assert subscription.lost
    assert await subscription.get(timeout=0.01) is None
    assert not subscription.lost  # reported once; the stream has re-read the log by then


async def test_a_bus_reconnect_wakes_the_reader_with_loss() -> None:
    subscription = LocalSubscription()
    asyncio.get_running_loop().call_soon(subscription.mark_lost)  # after get() has parked
    async with asyncio.timeout(5):
        assert await subscription.get(timeout=30) is None
    assert subscription.lost
