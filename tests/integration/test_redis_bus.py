"""The Redis bus and the stream on top of it: confirmed subscriptions, one upstream
subscription per instance, dedupe by seq, read-back on gaps and reconnects."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import timedelta

import pytest
from redis.asyncio import Redis

from initflow.bus.memory import MemoryBus
from initflow.bus.redis import PUBLISH_TIMEOUT, RedisBus
from initflow.events import EventType
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
