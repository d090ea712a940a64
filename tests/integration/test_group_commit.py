"""Group commit on Postgres: concurrent runs share statements, each write stays its own."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from uuid import UUID

import pytest

from initflow.errors import LeaseLost
from initflow.events import EventType
from initflow.models import ProgressEventRecord
from initflow.runner.journal import Change, RunJournal
from initflow.runner.leases import claim_next, release
from initflow.services.group_commit import group_commit
from initflow.services.snapshots import load_status
from initflow.settings import Settings
from initflow.states import StepState
from tests.integration.runner_support import World, world

pytestmark = pytest.mark.parametrize("backend", ["postgres"], indirect=True)

TTL = timedelta(seconds=30)


def started(journal: RunJournal, **fields: object) -> Change:
    first = journal.status.steps[0].name
    return Change(
        EventType.STEP_STARTED, first, {"status": StepState.RUNNING, "attempts": 1, **fields}
    )


async def claimed_journals(w: World, count: int) -> list[RunJournal]:
    for i in range(count):
        await w.create(f"Grouped {i}")
    journals = []
    for _ in range(count):
        lease = await claim_next("instance-1", TTL, exclude=[j.lease.project_id for j in journals])
        assert lease is not None
        journals.append(RunJournal(lease, await load_status(lease.project_id), w.bus))
    return journals


async def seqs(project_id: UUID) -> list[int]:
    return [r.seq for r in await ProgressEventRecord.filter(project_id=project_id).order_by("seq")]


async def test_concurrent_runs_share_one_statement_and_each_commits_its_own_events(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        journals = await claimed_journals(w, 8)
        before = group_commit().statements
        await asyncio.gather(*(j.record(started(j)) for j in journals))
        assert group_commit().statements - before == 1
        for journal in journals:
            assert await seqs(journal.lease.project_id) == [1]
            assert await load_status(journal.lease.project_id) == journal.status


async def test_a_refused_guard_in_a_shared_statement_writes_nothing_for_that_run_only(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        journals = await claimed_journals(w, 4)
        lost = journals[2]
        assert await release(lost.lease)  # its lease is gone: its fence no longer holds
        before = group_commit().statements
        outcomes = await asyncio.gather(
            *(j.record(started(j)) for j in journals), return_exceptions=True
        )
        assert group_commit().statements - before == 1
        assert isinstance(outcomes[2], LeaseLost)
        assert await seqs(lost.lease.project_id) == []
        assert (await load_status(lost.lease.project_id)).steps[0].status is StepState.PENDING
        for journal in (journals[0], journals[1], journals[3]):
            assert await seqs(journal.lease.project_id) == [1]


async def test_two_writers_of_one_project_never_share_a_statement_and_only_one_wins(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        (journal,) = await claimed_journals(w, 1)
        twin = RunJournal(journal.lease, journal.status, w.bus)
        outcomes = await asyncio.gather(
            journal.record(started(journal, message="first")),
            twin.record(started(twin, message="second")),
            return_exceptions=True,
        )
        assert sum(isinstance(o, LeaseLost) for o in outcomes) == 1
        assert await seqs(journal.lease.project_id) == [1]


async def test_a_write_the_database_rejects_fails_alone_and_the_others_commit(
    settings: Settings,
) -> None:
    async with world(settings) as w:
        journals = await claimed_journals(w, 3)
        bad = started(journals[1], error_code="X" * 60)  # the column holds 50 characters
        outcomes = await asyncio.gather(
            journals[0].record(started(journals[0])),
            journals[1].record(bad),
            journals[2].record(started(journals[2])),
            return_exceptions=True,
        )
        assert not isinstance(outcomes[0], BaseException)
        assert isinstance(outcomes[1], Exception) and not isinstance(outcomes[1], LeaseLost)
        assert not isinstance(outcomes[2], BaseException)
        assert await seqs(journals[1].lease.project_id) == []
        assert await seqs(journals[0].lease.project_id) == [1]
        assert await seqs(journals[2].lease.project_id) == [1]
