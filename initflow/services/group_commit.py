"""Group commit: concurrent journal writes share Postgres statements.

Each transition is one guarded statement (``models/journal_writes.py``). Under
load, the round trip and the commit of each statement cost the worker and
Postgres more than the write itself (``bench/runner_throughput.py``). So while
one flush is in flight, arriving writes wait and go out together in the next:
nothing is added when a write arrives alone; under load, one statement (one
commit) carries up to ``MAX_BATCH`` writes of one shape.

Invariants: each write stays guarded and all-or-nothing on its own; two writes
of one project never share a statement; a write whose caller was cancelled
before its flush began is not sent; when a shared statement fails, its writes
are retried one by one, so only a write at fault reports the error (a write
whose shared statement did commit is refused by its own ``last_seq`` guard on
the retry, which its caller treats like any refused guard).
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Hashable

from initflow.models import Project
from initflow.models.journal_writes import JournalWrite, write_postgres_batch, write_shape

MAX_BATCH = 16

Pending = tuple[JournalWrite, "asyncio.Future[bool]"]


class GroupCommit:
    """One per event loop (``group_commit()``); Postgres only."""

    def __init__(self) -> None:
        self._queue: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None
        self.statements = 0
        """Statements sent so far (with ``writes``: how well writes are being grouped)."""
        self.writes = 0

    async def write(self, write: JournalWrite) -> bool:
        """Whether the write's guard matched (everything written) or not (nothing)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._queue.append((write, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        batches: list[list[Pending]] = []
        try:
            while self._queue:
                queue, self._queue = self._queue, []
                batches = _batches([item for item in queue if not item[1].done()])
                await asyncio.gather(*(self._execute(batch) for batch in batches))
        finally:
            for _, future in [*self._queue, *(item for batch in batches for item in batch)]:
                if not future.done():
                    future.cancel()

    async def _execute(self, batch: list[Pending]) -> None:
        self.statements += 1
        self.writes += len(batch)
        try:
            matched = await write_postgres_batch(Project._meta.db, [write for write, _ in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            for item in batch:  # find the write at fault; the others go through
                await self._execute([item])
            return
        for (_, future), ok in zip(batch, matched, strict=True):
            _settle(future, ok)


def _batches(pending: list[Pending]) -> list[list[Pending]]:
    """Per shape, in arrival order: chunks of at most MAX_BATCH writes of distinct projects."""
    chunks: dict[Hashable, list[list[Pending]]] = {}
    for item in pending:
        shape_chunks = chunks.setdefault(write_shape(item[0]), [[]])
        chunk = shape_chunks[-1]
        if len(chunk) >= MAX_BATCH or any(w.project_id == item[0].project_id for w, _ in chunk):
            chunk = []
            shape_chunks.append(chunk)
        chunk.append(item)
    return [chunk for shape_chunks in chunks.values() for chunk in shape_chunks]


def _settle(future: asyncio.Future[bool], outcome: bool | Exception) -> None:
    if future.done():
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupCommit] = (
    weakref.WeakKeyDictionary()
)


def group_commit() -> GroupCommit:
    """This event loop's group commit (tests run each on its own loop)."""
    loop = asyncio.get_running_loop()
    instance = _per_loop.get(loop)
    if instance is None:
        instance = _per_loop[loop] = GroupCommit()
    return instance
