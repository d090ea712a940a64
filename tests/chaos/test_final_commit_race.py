"""The heartbeat racing the final commit (pinned): a finished run must not "lose its lease".

Uses the chaos test's own Postgres and Redis: the test pauses its Redis (SIGSTOP) right
before the executor's final commit, so the publish after that commit cannot finish and the
next heartbeat surely lands after the commit: the race, made deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from pathlib import Path

import pytest
import redis.asyncio
from e2e.processes import log_lines, pg_connection, requires_git, wait_for
from redis.asyncio.client import PubSub

from initflow.events import decode_events

from .fleet import create_project, prepare_fleet
from .servers import PostgresCluster, RedisServer

pytestmark = [pytest.mark.chaos, requires_git]

AUDIT_WRITTEN = "Audit entry written"  # finalize's last sub-progress message


async def test_a_heartbeat_after_the_final_commit_does_not_cancel_the_finished_run(
    tmp_path: Path, own_postgres: PostgresCluster, own_redis: RedisServer
) -> None:
    # TTL 3 s: a heartbeat every second; 0.5 s per step so the test can catch each write.
    fleet = await prepare_fleet(
        own_postgres, own_redis, tmp_path, lease_ttl=3, poll_interval=0.5, step_delay=0.5
    )
    redis_stopped = False
    listener: redis.asyncio.Redis | None = None
    pubsub: PubSub | None = None
    try:
        await fleet.start("race-a")
        service = fleet.current["race-a"]
        project_id, _ = await create_project(
            fleet, random.Random(1), "final-race", time.monotonic() + 30
        )
        pid = uuid.UUID(project_id)
        channel = f"{fleet.env['INITFLOW_REDIS_PREFIX']}:progress:{project_id}"
        listener = redis.asyncio.Redis.from_url(own_redis.url)
        pubsub = listener.pubsub()
        await pubsub.subscribe(channel)
        async with pg_connection(own_postgres.url("initflow")) as connection:

            async def last_progress_written() -> int | None:
                """finalize's last sub-progress write ("Audit entry written"), committed."""
                row = await connection.fetchrow(
                    "SELECT s.message, p.last_seq FROM initialization_steps s"
                    " JOIN projects p ON p.id = s.project_id"
                    " WHERE s.project_id = $1 AND s.name = 'finalize'",
                    pid,
                )
                return int(row["last_seq"]) if row["message"] == AUDIT_WRITTEN else None

            seq = await wait_for(last_progress_written, timeout=30, what="finalize's last write")

            # ... and published: the executor is now in finalize's last pause, and its next
            # publish is the final commit's. Stop Redis so that publish cannot finish.
            async def published() -> bool:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
                return message is not None and decode_events(message["data"])[-1].seq >= seq

            await wait_for(published, timeout=5, what=f"event {seq} on Redis", interval=0)
            own_redis.pause()
            redis_stopped = True

            async def committed() -> bool:
                return bool(
                    await connection.fetchval(
                        "SELECT status = 'active' FROM projects WHERE id = $1", pid
                    )
                )

            await wait_for(committed, timeout=10, what="the final commit")

        # The next heartbeat (within TTL/3 = 1 s) meets the finished run: a buggy executor
        # logs lease_lost at once; a correct one waits for its publish.
        with contextlib.suppress(AssertionError):
            await wait_for(
                lambda: asyncio.to_thread(log_lines, service, "action=lease_lost", project_id),
                timeout=3,
                what="a lease_lost line",
            )
        own_redis.resume()
        redis_stopped = False
        await wait_for(
            lambda: asyncio.to_thread(
                lambda: (
                    log_lines(service, "action=completed", project_id)
                    or log_lines(service, "action=lease_lost", project_id)
                )
            ),
            timeout=10,
            what="the executor to finish",
        )
        assert not log_lines(service, "action=lease_lost", project_id), service.stderr()
        assert log_lines(service, "action=completed", project_id), service.stderr()
    except BaseException:
        print(fleet.describe())
        raise
    finally:
        if redis_stopped:
            own_redis.resume()
        fleet.stop_all()
        if pubsub is not None:
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        if listener is not None:
            await listener.aclose()
