"""A live progress event is executed once per distinct subscription, not per subscriber.

With a thousand dashboards on one project, graphql-core would complete the same
selection set on the same event a thousand times (about a millisecond each), and
an instance would fall behind at a few hundred messages a second. Subscribers that
receive the same event object (one per process per event: the bus fans one decoded
event out, and ``init_progress`` builds its GraphQL view once per event) with the
same user, document, operation and variables get the same ``ExecutionResult``.

Invariants: a shared result is never mutated (Strawberry wraps it in a new result
per subscriber before extensions see it); only synchronous results are shared (the
event's fields are plain attributes today; an asynchronous one would simply be
executed per subscriber); queries and mutations are untouched.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any

from graphql import ExecutionResult, OperationType
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from initflow.schema.live_relay import CURRENT_RELAY
from initflow.schema.types import InitProgressEvent


class ExecutedEvent:
    """Stands in for a per-event executor whose result another subscriber computed."""

    def __init__(self, result: ExecutionResult) -> None:
        self._result = result

    def execute_operation(self, serially: bool | None = None) -> ExecutionResult:
        return self._result


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with per-event results shared as described above."""

    share_key: Hashable | None = None

    def build_per_event_executor(self, payload: Any) -> Any:
        if self.share_key is None:
            self.share_key = self._subscription_key()
            relay = CURRENT_RELAY.get()
            if relay is not None and relay.executor is None:
                relay.executor = self
        if self.share_key is not None and isinstance(payload, InitProgressEvent):
            result = payload.shared_results.get(self.share_key)
            if isinstance(result, ExecutionResult):
                return ExecutedEvent(result)  # no executor copy for the 2nd..Nth subscriber
        return super().build_per_event_executor(payload)

    def execute_operation(self, serially: bool | None = None) -> Any:
        payload = self.root_value
        if self.share_key is None or not isinstance(payload, InitProgressEvent):
            return super().execute_operation(serially)
        results = payload.shared_results
        result = results.get(self.share_key)
        if result is None:
            result = super().execute_operation(serially)
            if not isinstance(result, ExecutionResult):
                return result
            results[self.share_key] = result
        return result

    def synchronous_result(self, payload: Any) -> ExecutionResult | None:
        """The result for ``payload`` outside graphql-core's stream (``LiveRelay``);
        ``None`` if producing it would need the event loop."""
        result = self.build_per_event_executor(payload).execute_operation(False)
        if isinstance(result, ExecutionResult):
            return result
        close = getattr(result, "close", None)
        if callable(close):
            close()  # an unawaited coroutine: never started, nothing to undo
        return None

    def _subscription_key(self) -> Hashable | None:
        """Who asks and what exactly: equal keys give equal results for the same event."""
        location = self.operation.loc
        user = getattr(self.context_value, "user", None)
        if (
            location is None
            or user is None
            or self.operation.operation is not OperationType.SUBSCRIPTION
        ):
            return None
        name = self.operation.name.value if self.operation.name else None
        variables = json.dumps(self.variable_values.coerced, sort_keys=True, default=str)
        return (str(user.id), location.source.body, name, variables)
