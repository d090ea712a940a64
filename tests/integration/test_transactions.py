"""A task cancelled while its transaction starts must not leave the database locked."""

from __future__ import annotations

import asyncio

from initflow.db import open_database
from initflow.models import User
from initflow.models.transactions import transaction
from initflow.settings import Settings


async def test_a_task_cancelled_while_its_transaction_starts_leaves_the_database_usable(
    settings: Settings,
) -> None:
    database = await open_database(settings.effective_database_url, migrate=True)
    try:
        entered = asyncio.Event()

        async def writer() -> None:
            async with transaction() as connection:
                entered.set()
                await User.create(name="never", token_hash="x" * 64, using_db=connection)

        await User.all().count()  # connected: the start's only await is BEGIN, lock held
        for _ in range(12):  # each leak would hold the lock (SQLite) or a pooled connection
            task = asyncio.create_task(writer())
            # Runs right after the task's first step, which ends suspended inside BEGIN.
            asyncio.get_running_loop().call_soon(task.cancel)
            await asyncio.gather(task, return_exceptions=True)
        async with asyncio.timeout(10):  # hangs without the fix: the lock was never released
            async with transaction() as connection:
                await User.create(name="after", token_hash="y" * 64, using_db=connection)
            assert await User.filter(name="after").count() == 1
        assert not entered.is_set() or await User.filter(name="never").count() == 0
    finally:
        await database.close()
