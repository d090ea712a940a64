"""The Redis bus and the stream on top of it: confirmed subscriptions, one upstream
subscription per instance, dedupe by seq, read-back on gaps and reconnects."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from initflow.bus.memory import MemoryBus
from initflow.bus.redis import PUBLISH_TIMEOUT, RedisBus
from initflow.events import EventType, ProgressEvent
from initflow.runner.journal import Change, RunJournal
from initflow.runner.leases import claim_next
from initflow.services.progress import ProgressStream
from initflow.services.snapshots import load_status
from initflow.settings import Settings
from initflow.states import StepState
from tests.conftest import REDIS_TEST_URL
from tests.integration.runner_support import World, world

pytestmark = pytest.mark.parametrize("backend", ["postgres"])


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_TEST_URL)
    yield client
    await client.aclose()


async def numsub(redis: Redis, channel: str) -> int:
    result = await redis.pubsub_numsub(channel)
    return int(result[0][1])


async def silent_journal(w: World) -> RunJournal:
    """A journal that commits events without publishing them to Redis."""
    project_id = await w.create("Quiet")
    lease = await claim_next("runner-x", timedelta(seconds=30))
    assert lease is not None and lease.project_id == project_id
    return RunJournal(lease, await load_status(project_id), MemoryBus())


def started(journal: RunJournal, index: int) -> Change:
    step = journal.status.steps[index]
    return Change(EventType.STEP_STARTED, step.name, {"status": StepState.RUNNING, "attempts": 1})


async def test_local_subscribers_share_one_confirmed_redis_subscription(
    settings: Settings, redis: Redis
) -> None:
    async with world(settings) as w:
        assert isinstance(w.bus, RedisBus)
        journal = await silent_journal(w)
        project_id = str(journal.lease.project_id)
        channel = f"{settings.redis_prefix}:progress:{project_id}"
        async with (
            w.bus.subscribe(project_id) as a,
            w.bus.subscribe(project_id) as b,
            w.bus.subscribe(project_id) as c,
        ):
            assert await numsub(redis, channel) == 1
            # Confirmed on entry: a publish right now reaches every local subscriber.
            [event] = await journal.record(started(journal, 0))
            await w.bus.publish([event])
            for subscription in (a, b, c):
                received = await subscription.get(timeout=5)
                assert received is not None and received.seq == event.seq
        assert await numsub(redis, channel) == 0


async def test_stream_drops_duplicates_and_reads_gaps_back_from_the_log(settings: Settings) -> None:
    async with world(settings) as w:
        journal = await silent_journal(w)
        project_id = journal.lease.project_id
        stream = ProgressStream(w.bus, recheck_seconds=30)
        async with aclosing(stream.events(project_id, w.owner.id, None)) as events:
            snapshot = await anext(events)
            assert snapshot.type is EventType.SNAPSHOT and snapshot.seq == 0
            committed = await journal.record(started(journal, 0))
            committed += await journal.record(
                Change(EventType.STEP_PROGRESS, journal.status.steps[0].name, {"progress": 50})
            )
            committed += await journal.record(
                Change(EventType.STEP_PROGRESS, journal.status.steps[0].name, {"progress": 60})
            )
            # Only seq 3 reaches Redis: the stream must notice the gap and read 1 and 2 back.
            await w.bus.publish([committed[2]])
            received = [await anext(events) for _ in range(3)]
            assert [e.seq for e in received] == [1, 2, 3]
            # Older and duplicate events are not forwarded; the next new one is.
            await w.bus.publish([committed[1]])
            await w.bus.publish([committed[2]])
            [fourth] = await journal.record(
                Change(EventType.STEP_PROGRESS, journal.status.steps[0].name, {"progress": 70})
            )
            await w.bus.publish([fourth])
            assert (await anext(events)).seq == 4


async def test_a_quiet_stream_rechecks_the_log_so_a_lost_event_cannot_hang_it(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        journal = await silent_journal(w)
        stream = ProgressStream(w.bus, recheck_seconds=0.2)
        async with aclosing(stream.events(journal.lease.project_id, w.owner.id, None)) as events:
            await anext(events)
            [lost] = await journal.record(started(journal, 0))  # never published
            assert (await asyncio.wait_for(anext(events), 10)).seq == lost.seq


async def test_a_dropped_redis_connection_makes_subscribers_read_back_and_resubscribes(
    settings: Settings, redis: Redis
) -> None:
    async with world(settings) as w:
        assert isinstance(w.bus, RedisBus)
        journal = await silent_journal(w)
        project_id = journal.lease.project_id
        channel = f"{settings.redis_prefix}:progress:{project_id}"
        stream = ProgressStream(w.bus, recheck_seconds=30)
        async with aclosing(stream.events(project_id, w.owner.id, None)) as events:
            await anext(events)
            reconnects = w.bus.reconnects
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
            # Committed while the bus is down and never published: read back after reconnect.
            [missed] = await journal.record(started(journal, 0))
            assert (await asyncio.wait_for(anext(events), 10)).seq == missed.seq
            assert w.bus.reconnects > reconnects
            assert await numsub(redis, channel) == 1
            [live] = await journal.record(
                Change(EventType.STEP_PROGRESS, journal.status.steps[0].name, {"progress": 10})
            )
            await w.bus.publish([live])
            assert (await asyncio.wait_for(anext(events), 10)).seq == live.seq


async def test_runners_are_woken_through_redis(settings: Settings) -> None:
    async with world(settings) as w:
        other = RedisBus(REDIS_TEST_URL, settings.redis_prefix)
        await other.start()
        try:
            waiting = asyncio.create_task(other.wait_for_work(timeout=30))
            await asyncio.sleep(0)
            await w.create("Wake me")
            await asyncio.wait_for(waiting, 10)
        finally:
            await other.close()


async def test_a_commit_does_not_wait_for_redis_to_answer(settings: Settings) -> None:
    """Publishing queues the message: a Redis that accepts but never answers costs the
    committer nothing (before, every commit waited for the publish timeout)."""
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    bus = RedisBus(f"redis://127.0.0.1:{port}", settings.redis_prefix)
    async with world(settings) as w:
        journal = await silent_journal(w)
        [event] = await journal.record(started(journal, 0))
        await asyncio.wait_for(bus.publish([event]), timeout=PUBLISH_TIMEOUT / 5)
    await bus.close()  # waits for the send to time out
    silent.close()


class Collector:
    """A relay that takes every event it is offered, like a healthy socket."""

    def __init__(self) -> None:
        self.sent: list[int] = []
        self._more = asyncio.Event()

    def __call__(self, event: ProgressEvent) -> bool:
        self.sent.append(event.seq)
        self._more.set()
        return True

    async def until(self, count: int) -> None:
        async with asyncio.timeout(10):
            while len(self.sent) < count:
                self._more.clear()
                await self._more.wait()


@dataclass
class RelayedStream:
    w: World
    journal: RunJournal
    relay: Collector
    events: AsyncGenerator[ProgressEvent, None]


@contextlib.asynccontextmanager
async def relayed_stream(
    settings: Settings, recheck_seconds: float
) -> AsyncIterator[RelayedStream]:
    """A pending run's stream with a relay, its SNAPSHOT already taken."""
    async with world(settings) as w:
        journal = await silent_journal(w)
        relay = Collector()
        stream = ProgressStream(w.bus, recheck_seconds=recheck_seconds)
        events = stream.events(journal.lease.project_id, w.owner.id, None, relay)
        async with aclosing(events):
            assert (await anext(events)).type is EventType.SNAPSHOT
            yield RelayedStream(w, journal, relay, events)


async def assert_still_parked(reader: asyncio.Future[ProgressEvent], why: str) -> None:
    assert not reader.done(), why
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader


async def test_a_relayed_stream_sends_in_order_and_reads_a_gap_back_itself(
    settings: Settings,
) -> None:
    async with relayed_stream(settings, recheck_seconds=30) as stream:
        w, journal, relay, events = stream.w, stream.journal, stream.relay, stream.events
        step = journal.status.steps[0].name
        first = await journal.record(started(journal, 0))
        reader = asyncio.ensure_future(anext(events))  # parks, relay armed
        await w.bus.publish(first)
        gap = await journal.record(Change(EventType.STEP_PROGRESS, step, {"progress": 10}))
        gap += await journal.record(Change(EventType.STEP_PROGRESS, step, {"progress": 20}))
        await w.bus.publish(gap[1:])  # seq 2 never reaches Redis
        assert (await asyncio.wait_for(reader, 10)).seq == 2  # read back by the stream
        assert (await asyncio.wait_for(anext(events), 10)).seq == 3
        assert relay.sent == [1]
        reader = asyncio.ensure_future(anext(events))
        fourth = await journal.record(Change(EventType.STEP_PROGRESS, step, {"progress": 30}))
        await w.bus.publish(fourth)
        await relay.until(2)
        assert relay.sent == [1, 4]
        await assert_still_parked(reader, "a relayed event does not wake the reader")


async def test_a_relayed_stream_still_rechecks_the_log_when_nothing_comes(
    settings: Settings,
) -> None:
    async with relayed_stream(settings, recheck_seconds=0.2) as stream:
        [lost] = await stream.journal.record(started(stream.journal, 0))  # never published
        assert (await asyncio.wait_for(anext(stream.events), 10)).seq == lost.seq
        assert stream.relay.sent == []


async def test_a_stream_fed_by_its_relay_is_not_quiet_and_reads_nothing_back(
    settings: Settings,
) -> None:
    """The log is ahead of the bus while events are in flight; that is not a loss."""
    async with relayed_stream(settings, recheck_seconds=0.5) as stream:
        journal, relay = stream.journal, stream.relay
        step = journal.status.steps[0].name
        committed = await journal.record(started(journal, 0))
        for percent in range(1, 40):
            committed += await journal.record(
                Change(EventType.STEP_PROGRESS, step, {"progress": percent})
            )
        reader = asyncio.ensure_future(anext(stream.events))
        # The workload's pace, not a synchronisation: events keep arriving, one every
        # ≈ 25 ms for ≈ 1 s, so no 0.5 s wait is ever quiet.
        for event in committed:
            await stream.w.bus.publish([event])
            await asyncio.sleep(0.025)
        await relay.until(len(committed))
        assert relay.sent == [e.seq for e in committed]
        await assert_still_parked(reader, "nothing was read back and sent a second way")
