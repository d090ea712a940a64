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
run, so that this process's own backlog adds as little as it can to the figure). The
WebSocket client is a bare one (``WireClient``): a read is timestamped once and split
into frames in place, so a delivery costs this process a fraction of what serve spends
on it, as a client on another machine would cost nothing here.
Ends when every stream has completed, or on SIGTERM / ``--deadline``; then writes the
JSON result file (with ``ended_at``, the moment it stopped listening) and prints
``done``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit

from initflow.event_loop import use_fastest_loop
from initflow.web.frames import frame_header

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
    frames: list[tuple[float, bytes]] = field(default_factory=list)
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


NEXT_MESSAGE = b'"type":"next"'  # the server writes it compactly, right after the id
NEXT_WITHIN = 64

WEBSOCKET_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B65"


class WireClient(asyncio.Protocol):
    """One graphql-transport-ws connection on a bare socket (RFC 6455, client side).

    Why not aiohttp's client: its per-message path (reader, queue, task wake-up)
    cost ≈ 150 µs of CPU per frame, three times what serve spends delivering it,
    on the same two cores. Here a read is timestamped once, split into frames in
    place, and a ``next`` frame is only kept (bytes and receipt time) while
    recording; every other message goes to ``inbox``. Pings are answered at once.
    """

    def __init__(self, host: str, path: str) -> None:
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n\r\n"
        ).encode()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._upgraded = False
        self.inbox: asyncio.Queue[bytes | None] = asyncio.Queue()
        """Text messages other than recorded ``next`` frames; None: the connection ended."""
        self.recorded: list[tuple[float, bytes]] | None = None
        """Once a list: ``next`` frames are recorded there (receipt time, payload), not queued."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.inbox.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        received = time.time()
        self._buffer += data
        if not self._upgraded and not self._upgrade():
            return
        buffer = self._buffer
        start = 0
        while True:
            frame = _frame_at(buffer, start)
            if frame is None:
                break
            opcode, payload_start, end = frame
            payload = bytes(buffer[payload_start:end])
            start = end
            if opcode == OP_TEXT:
                if self.recorded is not None and NEXT_MESSAGE in payload[:NEXT_WITHIN]:
                    self.recorded.append((received, payload))
                else:
                    self.inbox.put_nowait(payload)
            elif opcode == OP_PING:
                self._send(OP_PONG, payload)
            elif opcode == OP_CLOSE:
                self._send(OP_CLOSE, payload[:2])
                assert self._transport is not None
                self._transport.close()
        del buffer[:start]

    def _upgrade(self) -> bool:
        head_end = self._buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return False
        status = bytes(self._buffer[: self._buffer.find(b"\r\n")])
        if b" 101 " not in status:
            self.inbox.put_nowait(None)
            assert self._transport is not None
            self._transport.close()
            return False
        del self._buffer[: head_end + 4]
        self._upgraded = True
        return True

    def send_json(self, body: dict[str, Any]) -> None:
        self._send(OP_TEXT, json.dumps(body).encode())

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        header = frame_header(opcode, len(payload), masked=True)
        self._transport.write(header + mask + masked)

    def close(self) -> None:
        self._send(OP_CLOSE, (1000).to_bytes(2, "big"))
        if self._transport is not None:
            self._transport.close()


OP_TEXT, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x8, 0x9, 0xA


def _frame_at(buffer: bytearray, start: int) -> tuple[int, int, int] | None:
    """(opcode, payload start, end) of the complete server frame at ``start``, if any.

    Server frames are unmasked; this server never fragments a message.
    """
    available = len(buffer) - start
    if available < 2:
        return None
    opcode = buffer[start] & 0x0F
    size = buffer[start + 1] & 0x7F
    header = 2
    if size == 126:
        if available < 4:
            return None
        size = int.from_bytes(buffer[start + 2 : start + 4], "big")
        header = 4
    elif size == 127:
        if available < 10:
            return None
        size = int.from_bytes(buffer[start + 2 : start + 10], "big")
        header = 10
    if available < header + size:
        return None
    return opcode, start + header, start + header + size


async def expect(client: WireClient, wanted: str) -> dict[str, Any]:
    """The next protocol message, which must be of type ``wanted`` (pings are answered)."""
    while True:
        message = await client.inbox.get()
        if message is None:
            raise ConnectionError(f"connection closed awaiting {wanted}")
        body: dict[str, Any] = json.loads(message)
        if body.get("type") == "ping":
            client.send_json({"type": "pong"})
            continue
        if body.get("type") != wanted:
            raise ConnectionError(f"expected {wanted}, got {str(body)[:200]}")
        return body


async def handshake(client: WireClient, token: str, project_id: str, sub: Subscriber) -> None:
    """connection_init → ack → subscribe → the SNAPSHOT event; then record what follows."""
    client.send_json({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
    await expect(client, "connection_ack")
    client.send_json(
        {
            "id": "1",
            "type": "subscribe",
            "payload": {"query": SUBSCRIBE, "variables": {"id": project_id}},
        }
    )
    body = await expect(client, "next")
    event = body["payload"]["data"]["initProgress"]
    if event["type"] != "SNAPSHOT":
        raise ConnectionError(f"first event is {event['type']}, not SNAPSHOT")
    sub.snapshot_seq = int(event["seq"])
    client.recorded = sub.frames


async def follow(client: WireClient, sub: Subscriber) -> None:
    """Wait for the end of the stream; ``next`` frames are recorded as they are read."""
    while True:
        message = await client.inbox.get()
        if message is None:
            raise ConnectionError("connection closed mid-stream")
        if NEXT_MESSAGE in message[:NEXT_WITHIN]:  # queued before recording began
            sub.frames.append((time.time(), message))
            continue
        body = json.loads(message)
        kind = body.get("type")
        if kind == "complete":
            sub.completed = True
            return
        elif kind == "ping":
            client.send_json({"type": "pong"})
        elif kind == "error":
            raise ConnectionError(f"subscription error: {str(body)[:200]}")


async def connect(url: str) -> WireClient:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WireClient(f"{host}:{port}", parts.path or "/"), host, port
    )
    return client


@dataclass
class Shared:
    """What every subscriber task of this process shares."""

    args: argparse.Namespace
    gate: asyncio.Semaphore
    setup: Setup


async def subscriber(shared: Shared, sub: Subscriber, project_id: str) -> None:
    args, gate, setup = shared.args, shared.gate, shared.setup
    client: WireClient | None = None
    try:
        async with gate:
            try:
                async with asyncio.timeout(args.connect_timeout):
                    client = await connect(args.url)
                    await handshake(client, args.token, project_id, sub)
            except (OSError, TimeoutError, ValueError, KeyError) as exc:
                sub.error = f"setup: {type(exc).__name__}: {exc}"[:300]
                setup.mark(ok=False)
                return
        setup.mark(ok=True)
        if args.close_after_snapshot:
            return
        try:
            await follow(client, sub)
        except (OSError, ValueError, KeyError) as exc:
            sub.error = f"stream: {type(exc).__name__}: {exc}"[:300]
    finally:
        if client is not None:
            client.close()


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
    shared = Shared(args, gate, setup)
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
    use_fastest_loop()
    result = asyncio.run(run(args))
    tmp = args.result.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(args.result)
    print("done", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
