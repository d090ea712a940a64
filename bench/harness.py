"""What several benchmarks need around the system they measure: ports and a private Redis."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from redis.asyncio import Redis


def free_port() -> int:
    """A port the kernel just handed out (bound to port 0, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def private_redis(work_dir: Path) -> AsyncIterator[str]:
    """A redis-server of our own on a free port, without persistence; yields its URL.

    Its counters (INFO commandstats) see one benchmark alone, and keys that a peer
    cannot prefix (Celery's kombu ``unacked``…) collide with nobody's.
    """
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        "redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
        "--appendonly", "no", "--dir", str(work_dir), "--loglevel", "warning",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}"
    try:
        client = Redis.from_url(url)
        for _ in range(100):
            with contextlib.suppress(Exception):
                if await client.ping():
                    break
            await asyncio.sleep(0.05)
        await client.aclose()
        yield url
    finally:
        process.terminate()
        await process.wait()
