"""The run journal: the executor's writable copy of a run's status.

While it holds the lease, the executor is the only writer of its run, so it
keeps the status in memory and commits each change through the shared
journal (``services/journal.py``) guarded by its lease: a change the database
refuses means the lease is gone (or an API action such as cancel got there
first), and the executor stops.
"""

from __future__ import annotations

from typing import Any

from initflow.bus import ProgressBus
from initflow.clock import utcnow
from initflow.errors import LeaseLost
from initflow.events import ProgressEvent
from initflow.runner.leases import Lease
from initflow.services.journal import Change, Effects, commit_changes
from initflow.status import StatusView

__all__ = ["Change", "RunJournal"]


class RunJournal:
    def __init__(self, lease: Lease, status: StatusView, bus: ProgressBus) -> None:
        self.lease = lease
        self.status = status
        self._bus = bus

    async def record(
        self,
        *changes: Change,
        project_changes: dict[str, Any] | None = None,
        effects: Effects | None = None,
    ) -> list[ProgressEvent]:
        """Commit ``changes`` in one transaction (renewing the lease), then publish them."""
        self.status, events = await commit_changes(
            self.status,
            changes,
            guard=self.lease.fence(),
            lost=LeaseLost,
            bus=self._bus,
            project_changes={
                "lease_expires_at": utcnow() + self.lease.ttl,
                **(project_changes or {}),
            },
            effects=effects,
        )
        return events
