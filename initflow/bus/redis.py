"""Redis pub/sub bus for several instances (``REDIS_URL``).

One Redis subscription per instance, fanned out to local subscribers (not one
connection per client). ``subscribe`` returns only after Redis confirmed the
channel, so the stream's snapshot, read afterwards, cannot miss an event.
Pub/sub is at-most-once: whenever the connection drops or reconnects, every
local subscriber is told it may have lost events and reads them back from
``progress_events``. Publishing never fails a commit: the database is the truth.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from initflow.bus.fanout import CancelWatchers, LocalFanout, LocalSubscription
from initflow.events import ProgressEvent, decode_events, encode_events

log = logging.getLogger("initflow.bus")

CONFIRM_TIMEOUT = 10.0
PUBLISH_TIMEOUT = 0.5
PUBLISH_PAUSE_AFTER_FAILURE = 2.0
RECONNECT_DELAYS = (0.1, 0.2, 0.5, 1.0, 2.0)


class RedisBus:
    def __init__(self, url: str, prefix: str = "initflow") -> None:
        self._redis: Redis = Redis.from_url(url, health_check_interval=5, socket_connect_timeout=2)
        # Publishing is on the commit path: a hung Redis must cost it little, never seconds.
        self._publisher: Redis = Redis.from_url(
            url, socket_timeout=PUBLISH_TIMEOUT, socket_connect_timeout=PUBLISH_TIMEOUT
        )
        self._publish_paused_until = 0.0
        self._outbox: list[tuple[str, bytes]] = []
        self._sender: asyncio.Task[None] | None = None
        self._prefix = prefix
        self.fanout = LocalFanout()
        self.cancels = CancelWatchers()
        self._work = asyncio.Event()
        self._pubsub: PubSub | None = None
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.reconnects = 0

    def _channel(self, project_id: str) -> str:
        return f"{self._prefix}:progress:{project_id}"

    @property
    def _work_channel(self) -> str:
        return f"{self._prefix}:work"

    @property
    def _control_channel(self) -> str:
        return f"{self._prefix}:control"

    async def start(self) -> None:
        async with self._lock:
            await self._connect()
        self._reader = asyncio.create_task(self._read_forever(), name="initflow-redis-reader")

    async def _connect(self) -> None:
        pubsub = self._redis.pubsub()
        channels = [
            self._work_channel,
            self._control_channel,
            *(self._channel(p) for p in self.fanout.projects()),
        ]
        self._pubsub = pubsub
        await self._subscribe_confirmed(channels, inline=True)
        assert pubsub.connection is not None
        pubsub.connection.register_connect_callback(self._on_reconnect)

    async def _on_reconnect(self, _connection: Any) -> None:
        """redis-py may reconnect (and resubscribe) by itself: anything may be lost."""
        self.reconnects += 1
        self.fanout.mark_all_lost()

    async def _subscribe_confirmed(self, channels: list[str], *, inline: bool = False) -> None:
        """Subscribe and wait for Redis's confirmation of every channel.

        ``inline``: no reader is consuming messages (start-up, or the reader
        itself reconnecting), so read the confirmations here.
        """
        assert self._pubsub is not None
        loop = asyncio.get_running_loop()
        waiting = [self._pending.setdefault(c, loop.create_future()) for c in channels]
        await self._pubsub.subscribe(*channels)
        if inline:
            while not all(f.done() for f in waiting):
                message = await self._pubsub.get_message(timeout=CONFIRM_TIMEOUT)
                if message is None:
                    raise TimeoutError("Redis did not confirm the subscription")
                self._handle(message)
        else:
            await asyncio.wait_for(asyncio.gather(*waiting), CONFIRM_TIMEOUT)

    async def _read_forever(self) -> None:
        """Read until cancelled; a lost connection is re-established, however long it takes."""
        while True:
            try:
                assert self._pubsub is not None
                message = await self._pubsub.get_message(timeout=1.0)
                if message is not None:
                    self._handle(message)
            except (RedisError, OSError, TimeoutError) as exc:
                self.fanout.mark_all_lost()
                await self._reconnect_until_connected(exc)

    async def _reconnect_until_connected(self, cause: BaseException) -> None:
        attempt = 0
        while True:
            delay = RECONNECT_DELAYS[min(attempt, len(RECONNECT_DELAYS) - 1)]
            attempt += 1
            log.warning(
                "redis bus disconnected (%s); reconnecting in %.1fs (attempt %d)",
                cause,
                delay,
                attempt,
                extra={"action": "bus_reconnect"},
            )
            await asyncio.sleep(delay)
            try:
                await self._reconnect()
                return
            except (RedisError, OSError, TimeoutError) as exc:
                cause = exc

    async def _reconnect(self) -> None:
        old, self._pubsub = self._pubsub, None
        if old is not None:
            with contextlib.suppress(RedisError, OSError):
                await old.aclose()  # type: ignore[no-untyped-call]
        for future in self._pending.values():
            if not future.done():
                future.cancel()
        self._pending.clear()
        async with self._lock:
            await self._connect()
        self.reconnects += 1
        self.fanout.mark_all_lost()

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = (
            message["channel"].decode()
            if isinstance(message["channel"], bytes)
            else message["channel"]
        )
        if kind == "subscribe":
            future = self._pending.pop(channel, None)
            if future is not None and not future.done():
                future.set_result(None)
        elif kind == "message":
            if channel == self._work_channel:
                self._work.set()
                return
            if channel == self._control_channel:
                command, _, project_id = bytes(message["data"]).decode().partition(":")
                if command == "cancel":
                    self.cancels.cancel(project_id)
                return
            try:
                events = decode_events(message["data"])
            except (ValueError, KeyError, TypeError):
                log.warning("ignoring a malformed progress message on %s", channel)
                return
            for event in events:
                self.fanout.deliver(event)

    async def publish(self, events: Sequence[ProgressEvent]) -> None:
        """Queue a commit's events as one message and return without waiting for Redis.

        The commit path never waits on Redis (a transition costs one database round
        trip, not two). One sender drains the queue, one pipeline per round, so every
        project's messages leave in commit order; under load the cost per commit
        falls. A message lost on the way is read back from the log by the stream.
        """
        if not events:
            return
        if asyncio.get_running_loop().time() < self._publish_paused_until:
            # Redis failed a moment ago: do not queue behind it again.
            # Local subscribers read these events back from the log.
            self.fanout.mark_all_lost()
            return
        for project_id, group in itertools.groupby(events, key=lambda e: e.project_id):
            self._outbox.append((self._channel(project_id), encode_events(list(group))))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send_outbox(), name="initflow-redis-publish")

    async def _send_outbox(self) -> None:
        """Send everything queued, one pipeline per round, until nothing is left."""
        while self._outbox:
            messages, self._outbox = self._outbox, []
            try:
                async with asyncio.timeout(PUBLISH_TIMEOUT * 2):
                    async with self._publisher.pipeline(transaction=False) as pipe:
                        for channel, message in messages:
                            pipe.publish(channel, message)
                        await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                self._publish_paused_until = asyncio.get_running_loop().time() + (
                    PUBLISH_PAUSE_AFTER_FAILURE
                )
                self._outbox.clear()
                self.fanout.mark_all_lost()
                log.warning(
                    "publish failed (subscribers will read back): %s",
                    exc,
                    extra={"action": "bus_publish_failed"},
                )

    @asynccontextmanager
    async def subscribe(self, project_id: str) -> AsyncIterator[LocalSubscription]:
        subscription, first = self.fanout.add(project_id)
        try:
            if first:
                try:
                    async with self._lock:
                        await self._subscribe_confirmed([self._channel(project_id)])
                except (RedisError, OSError, TimeoutError) as exc:
                    # Redis is away: the reconnect resubscribes every local project;
                    # until then this subscriber reads the log back.
                    log.warning(
                        "subscribe failed (%s); reading back from the log",
                        exc,
                        extra={"action": "bus_subscribe_failed", "project_id": project_id},
                    )
                    subscription.mark_lost()
            yield subscription
        finally:
            if self.fanout.remove(project_id, subscription):
                async with self._lock:
                    # Someone may have subscribed again while we waited for the lock.
                    if self.fanout.count(project_id) == 0 and self._pubsub is not None:
                        with contextlib.suppress(RedisError, OSError):
                            await self._pubsub.unsubscribe(self._channel(project_id))

    async def announce_cancel(self, project_id: str) -> None:
        self.cancels.cancel(project_id)
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._publisher.publish(self._control_channel, f"cancel:{project_id}".encode())

    def watch_cancel(self, project_id: str) -> AbstractAsyncContextManager[asyncio.Event]:
        return self.cancels.watch(project_id)

    async def wake_runners(self) -> None:
        with contextlib.suppress(RedisError, OSError, TimeoutError):
            await self._publisher.publish(self._work_channel, b"1")

    def notice_work(self) -> None:
        self._work.set()

    async def wait_for_work(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._work.wait(), timeout)
        self._work.clear()

    async def ping(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self._redis.ping(), 2))
        except (RedisError, OSError, TimeoutError):
            return False

    async def subscriber_channels(self) -> int:
        """How many progress channels this instance holds at Redis (for leak tests)."""
        return len(self.fanout.projects())

    async def close(self) -> None:
        if self._sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender  # sends what is queued; bounded by the publish timeout
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
        self.fanout.clear()
        await self._redis.aclose()
        await self._publisher.aclose()
