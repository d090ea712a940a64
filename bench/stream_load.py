"""Load-generator process for bench/stream.py: many `initProgress` subscribers over WebSocket.

    python bench/stream_load.py --url ws://127.0.0.1:PORT/graphql --token T \
        --projects ID1,ID2,... --first 0 --count 2500 --result out.json

Opens ``--count`` WebSocket connections (graphql-transport-ws, token in the
``connection_init`` payload), each with ONE ``initProgress`` subscription; subscriber
``first + i`` follows project ``(first + i) mod len(projects)``. At most
``--concurrency`` handshakes (connect → ack → subscribe → SNAPSHOT) are in flight at
once. Prints ``ready <subscribed> <failed>`` once every subscriber has its SNAPSHOT or
failed (after ``--setup-deadline`` the ones still pending count as failed), then
records, for every later event, ``time.time()`` at receipt minus the event's ``at``
(a ``next`` frame is only timestamped and kept while listening, and parsed after the
run, so that this process's own backlog adds as little as it can to the figure).
Ends when every stream has completed, or on SIGTERM / ``--deadline``; then writes the
JSON result file (with ``ended_at``, the moment it stopped listening) and prints
``done``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

SUBSCRIBE = (
    "subscription($id: ID!) { initProgress(projectId: $id) "
    "{ seq type at step { name status progress message } status { status progress } } }"
)
PROTOCOL = "graphql-transport-ws"


@dataclass
class Subscriber:
    index: int
    project: int
    snapshot_seq: int | None = None
    seqs: list[int] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    received_at: list[float] = field(default_factory=list)
    frames: list[tuple[float, str]] = field(default_factory=list)
    completed: bool = False
    error: str | None = None

    def result(self) -> dict[str, Any]:
        for received, text in self.frames:  # parsed after the run, not while timing
            event = json.loads(text)["payload"]["data"]["initProgress"]
            self.seqs.append(int(event["seq"]))
            at = datetime.fromisoformat(event["at"]).timestamp()
            self.latencies_ms.append((received - at) * 1000.0)
            self.received_at.append(received)
        self.frames.clear()
        return {
            "index": self.index,
            "project": self.project,
            "snapshot_seq": self.snapshot_seq,
            "seqs": self.seqs,
            "latencies_ms": self.latencies_ms,
            "received_at": self.received_at,
            "completed": self.completed,
            "error": self.error,
        }


class Setup:
    """Counts subscribers that are subscribed (SNAPSHOT received) or failed."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.subscribed = 0
        self.failed = 0
        self.finished = asyncio.Event()
        if total == 0:
            self.finished.set()

    def mark(self, *, ok: bool) -> None:
        if ok:
            self.subscribed += 1
        else:
            self.failed += 1
        if self.subscribed + self.failed >= self.total:
            self.finished.set()


async def expect(ws: aiohttp.ClientWebSocketResponse, wanted: str) -> dict[str, Any]:
    """The next protocol message, which must be of type ``wanted`` (pings are answered)."""
    while True:
        message = await ws.receive()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket {message.type.name} ({ws.close_code}) awaiting {wanted}")
        body: dict[str, Any] = json.loads(message.data)
        if body.get("type") == "ping":
            await ws.send_json({"type": "pong"})
            continue
        if body.get("type") != wanted:
            raise ConnectionError(f"expected {wanted}, got {str(body)[:200]}")
        return body


async def handshake(
    ws: aiohttp.ClientWebSocketResponse, token: str, project_id: str, sub: Subscriber
) -> None:
    """connection_init → ack → subscribe → the SNAPSHOT event."""
    await ws.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    await expect(ws, "connection_ack")
    await ws.send_json(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SUBSCRIBE, "variables": {"id": project_id}},
        }
    )
    body = await expect(ws, "next")
    event = body["payload"]["data"]["initProgress"]
    if event["type"] != "SNAPSHOT":
        raise ConnectionError(f"first event is {event['type']}, not SNAPSHOT")
    sub.snapshot_seq = int(event["seq"])


NEXT_MESSAGE = '"type":"next"'  # the server writes it compactly, right after the id
NEXT_WITHIN = 64


async def follow(ws: aiohttp.ClientWebSocketResponse, sub: Subscriber) -> None:
    """Record every event after the SNAPSHOT until the server completes the stream."""
    while True:
        message = await ws.receive()
        received = time.time()
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"socket {message.type.name} ({ws.close_code}) mid-stream")
        if NEXT_MESSAGE in message.data[:NEXT_WITHIN]:
            sub.frames.append((received, message.data))
            continue
        body = json.loads(message.data)
        kind = body.get("type")
        if kind == "complete":
            sub.completed = True
            return
        elif kind == "ping":
            await ws.send_json({"type": "pong"})
        elif kind == "error":
            raise ConnectionError(f"subscription error: {str(body)[:200]}")


@dataclass
class Shared:
    """What every subscriber task of this process shares."""

    session: aiohttp.ClientSession
    args: argparse.Namespace
    gate: asyncio.Semaphore
    setup: Setup


async def subscriber(shared: Shared, sub: Subscriber, project_id: str) -> None:
    session, args, gate, setup = shared.session, shared.args, shared.gate, shared.setup
    ws: aiohttp.ClientWebSocketResponse | None = None
    try:
        async with gate:
            try:
                async with asyncio.timeout(args.connect_timeout):
                    ws = await session.ws_connect(args.url, protocols=[PROTOCOL], autoping=True)
                    await handshake(ws, args.token, project_id, sub)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError, KeyError) as exc:
                sub.error = f"setup: {type(exc).__name__}: {exc}"[:300]
                setup.mark(ok=False)
                return
        setup.mark(ok=True)
        if args.close_after_snapshot:
            return
        try:
            await follow(ws, sub)
        except (aiohttp.ClientError, OSError, ValueError, KeyError) as exc:
            sub.error = f"stream: {type(exc).__name__}: {exc}"[:300]
    finally:
        if ws is not None and not ws.closed:
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(5):
                    await ws.close()


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def run(args: argparse.Namespace) -> dict[str, Any]:
    projects = args.projects.split(",")
    subs = [Subscriber(i, i % len(projects)) for i in range(args.first, args.first + args.count)]
    setup = Setup(len(subs))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    gate = asyncio.Semaphore(args.concurrency)
    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        shared = Shared(session, args, gate, setup)
        tasks = [asyncio.create_task(subscriber(shared, s, projects[s.project])) for s in subs]
        if not await wait_event(setup.finished, args.setup_deadline):
            for sub, task in zip(subs, tasks, strict=True):
                if sub.snapshot_seq is None and sub.error is None:
                    task.cancel()
                    sub.error = "setup: deadline: not subscribed before the setup deadline"
                    setup.mark(ok=False)
        setup_seconds = time.perf_counter() - started
        print(f"ready {setup.subscribed} {setup.failed}", flush=True)
        everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
        stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        await asyncio.wait(
            {everything, stopped}, timeout=args.deadline, return_when=asyncio.FIRST_COMPLETED
        )
        stopped.cancel()
        ended_at = time.time()
        for task in tasks:
            task.cancel()
        await everything
    for s in subs:
        if not s.completed and s.error is None and not args.close_after_snapshot:
            s.error = "stopped before the stream completed"
    return {
        "subscribed": setup.subscribed,
        "failed": setup.failed,
        "setup_seconds": setup_seconds,
        "ended_at": ended_at,
        "cpu_seconds": time.process_time(),
        "subscribers": [s.result() for s in subs],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", required=True, help="ws://host:port/graphql")
    parser.add_argument("--token", required=True)
    parser.add_argument("--projects", required=True, help="comma-separated project ids")
    parser.add_argument("--first", type=int, default=0, help="global index of the first one")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=32, help="handshakes in flight")
    parser.add_argument("--connect-timeout", type=float, default=120.0)
    parser.add_argument("--setup-deadline", type=float, default=600.0, help="seconds to subscribe")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds after ready")
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--close-after-snapshot", action="store_true", help="warm-up mode")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.result)
    print("done", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
