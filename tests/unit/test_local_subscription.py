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


def terminal(seq: int) -> ProgressEvent:
    status = StatusView("p", ProjectState.ACTIVE, (), None, seq, AT)
    return ProgressEvent("p", seq, EventType.INITIALIZATION_COMPLETED, AT, None, status)


async def test_a_caught_up_reader_has_events_relayed_in_order_without_waking() -> None:
    subscription, sent = LocalSubscription(), []
    subscription.relay_after(4, lambda e: sent.append(e.seq) is None)
    for seq in (5, 6, 5):  # the bus may repeat an event
        subscription.deliver(event(seq))
    assert sent == [5, 6]
    assert await subscription.get(timeout=0.01) is None and not subscription.lost
    assert subscription.stop_relay() == (6, False)


async def test_an_event_out_of_order_stops_relaying_and_is_queued_for_the_reader() -> None:
    subscription, sent = LocalSubscription(), []
    subscription.relay_after(4, lambda e: sent.append(e.seq) is None)
    subscription.deliver(event(6))  # 5 went missing
    subscription.deliver(event(7))
    assert sent == []
    assert subscription.stop_relay() == (4, False)
    received = [await subscription.get(timeout=5) for _ in range(2)]
    assert [e.seq for e in received if e is not None] == [6, 7]


async def test_a_refused_event_is_queued_and_relaying_stops() -> None:
    subscription = LocalSubscription()
    subscription.relay_after(4, lambda e: False)
    subscription.deliver(event(5))
    subscription.deliver(event(6))
    assert subscription.stop_relay() == (4, False)
    received = [await subscription.get(timeout=5) for _ in range(2)]
    assert [e.seq for e in received if e is not None] == [5, 6]


async def test_a_relay_that_fails_is_treated_as_a_refusal() -> None:
    subscription = LocalSubscription()

    def broken(_: ProgressEvent) -> bool:
        raise ConnectionResetError("gone")

    subscription.relay_after(4, broken)
    subscription.deliver(event(5))
    assert subscription.stop_relay() == (4, False)
    received = await subscription.get(timeout=5)
    assert received is not None and received.seq == 5


async def test_a_relayed_terminal_event_wakes_the_reader_to_end_the_stream() -> None:
    subscription, sent = LocalSubscription(), []
    subscription.relay_after(4, lambda e: sent.append(e.seq) is None)
    asyncio.get_running_loop().call_soon(subscription.deliver, terminal(5))
    async with asyncio.timeout(5):
        assert await subscription.get(timeout=60) is None
    assert sent == [5]
    assert subscription.stop_relay() == (5, True)
    subscription.deliver(event(6))  # nothing is relayed after the end
    assert sent == [5]


async def test_a_loss_stops_relaying_and_is_reported() -> None:
    subscription, sent = LocalSubscription(), []
    subscription.relay_after(4, lambda e: sent.append(e.seq) is None)
    subscription.mark_lost()
    subscription.deliver(event(5))
    assert sent == []
    assert await subscription.get(timeout=5) is not None  # the queued event first
    assert await subscription.get(timeout=5) is None and subscription.lost


async def test_relaying_waits_until_the_reader_has_taken_what_is_queued() -> None:
    subscription, sent = LocalSubscription(), []
    subscription.deliver(event(5))
    subscription.relay_after(4, lambda e: sent.append(e.seq) is None)
    subscription.deliver(event(5))  # a repeat must not overtake the queued original
    subscription.deliver(event(6))
    assert sent == []
    received = [await subscription.get(timeout=5) for _ in range(3)]
    assert [e.seq for e in received if e is not None] == [5, 5, 6]
