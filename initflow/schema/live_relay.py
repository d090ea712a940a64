"""Live events of a caught-up subscription, written to its socket by the bus's fan-out.

Through Strawberry, every delivery wakes a chain of async generators per
subscriber (the resolver, graphql-core's mapping, Strawberry's stream, the
transport's send loop): most of a delivery's CPU, and a thousand subscribers of
one project wait for a thousand such chains. The graphql-transport-ws handler
(``initflow.web.transport``) gives each operation a ``LiveRelay``; the operation's
executor registers itself with it on its first event (the SNAPSHOT, through the
normal path); from then on ``ProgressStream`` lets the fan-out call ``send`` for
each next live event in order, which takes the result shared by every subscriber
of the same document (``shared_events``) and hands its data to the transport.

Invariants: only results without errors are relayed, and only when the schema's
extensions do nothing for such results (``PreparedExtensionsRunner``); anything
refused goes the normal way, in order, because relaying stops at the first refusal.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from initflow.schema.shared_events import SharedEventExecutor


class LiveRelay:
    def __init__(self, send_data: Callable[[object], bool]) -> None:
        self._send_data = send_data
        self.executor: SharedEventExecutor | None = None

    def send(self, root: object) -> bool:
        """Whether ``root``'s result for this operation was handed to the transport."""
        if self.executor is None:
            return False
        result = self.executor.synchronous_result(root)
        if result is None or result.errors:
            return False
        return self._send_data(result.data)


CURRENT_RELAY: ContextVar[LiveRelay | None] = ContextVar("initflow_live_relay", default=None)
"""The relay of the operation whose task is running (each operation runs in its own task)."""
