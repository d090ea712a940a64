"""Transactions that a cancelled task cannot leave half-open.

Tortoise's ``in_transaction()`` takes the SQLite connection's lock (Postgres: a
pool connection) and then awaits ``BEGIN``. A task cancelled during that await
never reaches ``__aexit__``: the lock is never released and every later query of
the process waits forever. A cancel or a lost lease cancels the executor at any
await (found by the browser suite: a single-instance server hung right after a
cancel). Here a task cancelled while its transaction starts rolls it back and
releases the connection before the cancellation goes on. (The start runs in the
caller's task: Tortoise keeps the transaction's connection in a context
variable, so it cannot be shielded in a task of its own.) ``open_database``
connects SQLite at start-up, so the only await inside the start that holds the
lock is ``BEGIN``, after the context variable is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction


@asynccontextmanager
async def transaction() -> AsyncIterator[BaseDBAsyncClient]:
    """``in_transaction()`` that releases its connection whenever it is cancelled."""
    context = in_transaction()
    try:
        connection = await context.__aenter__()
    except asyncio.CancelledError as cancelled:
        # Cancelled inside BEGIN: the connection (and the SQLite lock) is taken once
        # the context variable is set; release it, then let the cancellation go on.
        if getattr(context, "token", None) is not None:
            await context.__aexit__(asyncio.CancelledError, cancelled, None)
        raise
    try:
        yield connection
    except BaseException as exc:
        await context.__aexit__(type(exc), exc, exc.__traceback__)
        raise
    await context.__aexit__(None, None, None)
