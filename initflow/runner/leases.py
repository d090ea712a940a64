"""Leases: which runner executes a project, fenced by a token.

A claim bumps ``lease_token``; every later write of that executor first
updates the project row *conditioned on its token* and checks that exactly one
row matched. A zero count means another runner claimed the project (our lease
expired while we were frozen, say) and the executor stops at once, writing
nothing. On SQLite the conditional update takes the database write lock until
commit; on Postgres it takes the row lock; either way the check holds for the
whole transaction. A claim is a compare-and-set on the token, which works the
same on both databases (Tortoise ignores ``select_for_update`` on SQLite).
"""

from __future__ import annotations

from collections.abc import Collection
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q

from initflow.clock import utcnow
from initflow.errors import LeaseLost
from initflow.models import Project
from initflow.models.journal_writes import Guard, is_postgres
from initflow.services.journal import guarded_transaction
from initflow.states import ProjectState

CLAIM_BATCH = 20


@dataclass(frozen=True)
class Lease:
    project_id: UUID
    owner: str
    token: int
    ttl: timedelta
    taken_over_from: str | None = None
    resumed_own: bool = False

    def fence(self) -> Guard:
        """The columns that prove the lease is still ours."""
        return {"id": self.project_id, "lease_token": self.token, "lease_owner": self.owner}


def _claimable(owner: str, now: datetime, exclude: Collection[UUID]) -> Q:
    """Initializing, due, and either free, expired, or already ours (a restart)."""
    free = Q(lease_owner__isnull=True) | Q(lease_expires_at__lt=now) | Q(lease_owner=owner)
    due = Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now)
    query = Q(status=ProjectState.INITIALIZING) & free & due
    if exclude:
        query &= ~Q(id__in=list(exclude))
    return query


CLAIM_SKIP_LOCKED = """
WITH candidate AS (
    SELECT id, lease_owner AS previous_owner
    FROM projects
    WHERE status = 'initializing'
      AND (lease_owner IS NULL OR lease_expires_at < $2 OR lease_owner = $1)
      AND (next_attempt_at IS NULL OR next_attempt_at <= $2)
      AND NOT (id = ANY($4::uuid[]))
    ORDER BY created_at
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
UPDATE projects AS p
SET lease_owner = $1, lease_token = p.lease_token + 1, lease_expires_at = $3
FROM candidate
WHERE p.id = candidate.id
RETURNING p.id, p.lease_token, candidate.previous_owner
"""


def _lease(row: dict[str, Any], owner: str, ttl: timedelta, token: int) -> Lease:
    previous = row.get("previous_owner", row.get("lease_owner"))
    return Lease(
        project_id=row["id"],
        owner=owner,
        token=token,
        ttl=ttl,
        taken_over_from=previous if previous not in (None, owner) else None,
        resumed_own=previous == owner,
    )


async def claim_next(owner: str, ttl: timedelta, exclude: Collection[UUID] = ()) -> Lease | None:
    """Claim the oldest claimable project, or return ``None`` when there is none."""
    connection = Project._meta.db
    if is_postgres(connection):
        return await _claim_skip_locked(connection, owner, ttl, exclude)
    return await _claim_compare_and_set(owner, ttl, exclude)


async def _claim_skip_locked(
    connection: BaseDBAsyncClient, owner: str, ttl: timedelta, exclude: Collection[UUID]
) -> Lease | None:
    """Postgres: one statement; concurrent claimers skip each other's locked rows."""
    now = utcnow()
    rows = await connection.execute_query_dict(
        CLAIM_SKIP_LOCKED, [owner, now, now + ttl, list(exclude)]
    )
    if not rows:
        return None
    return _lease(rows[0], owner, ttl, rows[0]["lease_token"])


async def _claim_compare_and_set(
    owner: str, ttl: timedelta, exclude: Collection[UUID]
) -> Lease | None:
    """SQLite: writers are serialised; a token compare-and-set makes the claim exclusive."""
    now = utcnow()
    candidates: list[dict[str, Any]] = (
        await Project.filter(_claimable(owner, now, exclude))
        .order_by("created_at")
        .limit(CLAIM_BATCH)
        .values("id", "lease_token", "lease_owner")
    )
    for row in candidates:
        claimed = await Project.filter(
            _claimable(owner, now, ()), id=row["id"], lease_token=row["lease_token"]
        ).update(lease_owner=owner, lease_token=row["lease_token"] + 1, lease_expires_at=now + ttl)
        if claimed == 1:
            return _lease(row, owner, ttl, row["lease_token"] + 1)
    return None


async def renew(lease: Lease) -> None:
    """Extend the lease (the heartbeat); raises LeaseLost when it is no longer ours."""
    renewed = await Project.filter(**lease.fence()).update(lease_expires_at=utcnow() + lease.ttl)
    if renewed != 1:
        raise LeaseLost()


async def release(lease: Lease, **changes: Any) -> bool:
    """Give the project back (graceful stop, retry later); a no-op if already lost."""
    released = await Project.filter(**lease.fence()).update(
        lease_owner=None, lease_expires_at=None, **changes
    )
    return released == 1


def fenced_transaction(lease: Lease) -> AbstractAsyncContextManager[BaseDBAsyncClient]:
    """A transaction that starts by proving the lease is still ours (and renewing it).

    Steps write their database effects inside it, so a runner that lost its
    lease cannot add an effect after its successor started.
    """
    return guarded_transaction(lease.fence(), LeaseLost, lease_expires_at=utcnow() + lease.ttl)
