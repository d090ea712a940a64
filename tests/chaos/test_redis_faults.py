"""Redis faults the service must ride out (both pinned: it does not yet).

- after a Redis restart, every instance relays live events again;
- while Redis hangs (stopped, not dead), runs go on at database speed.

They run on the chaos test's own Redis (the machine's must never be restarted or paused
under other tests) and its own Postgres cluster.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import time
import uuid
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio
from e2e.processes import log_lines, pg_connection, pg_events, requires_git, wait_for

from initflow.client.api import ApiClient

from .fleet import Fleet, create_project, prepare_fleet
from .servers import PostgresCluster, RedisServer

pytestmark = [pytest.mark.chaos, requires_git]

INIT_PROGRESS = """
subscription Progress($id: ID!) {
  initProgress(projectId: $id) { seq type status { status } }
}
"""


async def work_channel_subscribers(redis_server: RedisServer, fleet: Fleet) -> int:
    """How many connections subscribe the fleet's work channel (one per healthy bus)."""
    client = redis.asyncio.Redis.from_url(redis_server.url, socket_connect_timeout=2)
    try:
        channel = f"{fleet.env['INITFLOW_REDIS_PREFIX']}:work"
        counts = await client.pubsub_numsub(channel)
        return int(counts[0][1])
    finally:
        await client.aclose()


async def test_after_a_redis_restart_every_instance_relays_live_events_again(
    tmp_path: Path, own_postgres: PostgresCluster, own_redis: RedisServer
) -> None:
    fleet = await prepare_fleet(
        own_postgres, own_redis, tmp_path, lease_ttl=3, poll_interval=0.5, step_delay=0.7
    )
    try:
        await asyncio.gather(fleet.start("relay-a"), fleet.start("relay-b"))
        assert await work_channel_subscribers(own_redis, fleet) == 2

        # A one-second Redis outage: both buses notice, then Redis is back on its port.
        own_redis.kill()
        for service in fleet.current.values():
            await wait_for(
                partial(asyncio.to_thread, log_lines, service, "action=bus_reconnect"),
                timeout=10,
                what=f"{service.label} to notice the outage",
            )
        await asyncio.sleep(1.0)  # the outage itself
        await asyncio.to_thread(own_redis.start)

        # Each bus resubscribes its work channel on reconnecting (well within 15 s).
        async def both_resubscribed() -> bool:
            return await work_channel_subscribers(own_redis, fleet) == 2

        await wait_for(
            both_resubscribed,
            timeout=15,
            what="both instances to resubscribe at Redis",
            interval=0.2,
        )

        # And a client of one instance follows a run executed by the other, live.
        project_id, _ = await create_project(
            fleet, random.Random(1), "after-redis", time.monotonic() + 30
        )
        async with pg_connection(own_postgres.url("initflow")) as connection:
            owner = await wait_for(
                lambda: connection.fetchval(
                    "SELECT lease_owner FROM projects WHERE id = $1", uuid.UUID(project_id)
                ),
                timeout=10,
                what="the claim",
            )
        watcher = next(s for name, s in fleet.current.items() if name != owner)
        client = ApiClient(watcher.base_url, fleet.token)
        subscribed = datetime.now(UTC)
        received: list[tuple[dict[str, Any], datetime]] = []
        async with asyncio.timeout(60):
            async for data in client.subscribe(INIT_PROGRESS, {"id": project_id}):
                received.append((data["initProgress"], datetime.now(UTC)))
        snapshot_after = (received[0][1] - subscribed).total_seconds()
        assert snapshot_after < 3, f"the snapshot came {snapshot_after:.1f} s after subscribing"
        async with pg_connection(own_postgres.url("initflow")) as connection:
            committed = {e["seq"]: e["created_at"] for e in await pg_events(connection, project_id)}
        latencies = [(at - committed[e["seq"]]).total_seconds() for e, at in received[1:]]
        assert latencies, received
        assert statistics.median(latencies) < 1, f"live events arrived {latencies} s late"
    except BaseException:
        print(fleet.describe())
        raise
    finally:
        fleet.stop_all()


async def test_a_hung_redis_does_not_stall_the_runs(
    tmp_path: Path, own_postgres: PostgresCluster, own_redis: RedisServer
) -> None:
    fleet = await prepare_fleet(
        own_postgres, own_redis, tmp_path, lease_ttl=3, poll_interval=0.5, step_delay=0.1
    )
    paused = False
    try:
        await fleet.start("hung-a")
        project_id, _ = await create_project(
            fleet, random.Random(1), "hung-redis", time.monotonic() + 30
        )
        async with pg_connection(own_postgres.url("initflow")) as connection:

            async def active() -> bool:
                status = await connection.fetchval(
                    "SELECT status FROM projects WHERE id = $1", uuid.UUID(project_id)
                )
                return bool(status == "active")

            async def started() -> bool:
                last_seq = await connection.fetchval(
                    "SELECT last_seq FROM projects WHERE id = $1", uuid.UUID(project_id)
                )
                return bool(last_seq)

            await wait_for(started, timeout=10, what="the run to start")
            own_redis.pause()  # connections stay open; nothing is answered
            paused = True
            # Unhindered, the run takes about a second; the database is all it needs.
            await wait_for(
                active,
                timeout=20,
                what="the run to finish while Redis hangs",
                interval=0.2,
            )
    except BaseException:
        print(fleet.describe())
        raise
    finally:
        if paused:
            own_redis.resume()
        fleet.stop_all()
