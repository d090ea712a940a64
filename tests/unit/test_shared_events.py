"""A live event is executed once per distinct subscription and never across users or documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any
from uuid import uuid4

from graphql import ExecutionResult, parse

from initflow.events import EventType, ProgressEvent
from initflow.schema.root import schema
from initflow.schema.shared_events import SharedEventExecutor
from initflow.schema.types import InitProgressEvent
from initflow.states import ProjectState
from initflow.status import StatusView

AT = datetime(2026, 1, 1, tzinfo=UTC)
STATUS_ONLY = "subscription($id: ID!) { initProgress(projectId: $id) { seq status { status } } }"
WITH_TYPE = "subscription($id: ID!) { initProgress(projectId: $id) { seq type } }"
ALICE = SimpleNamespace(user=SimpleNamespace(id=uuid4()))
BOB = SimpleNamespace(user=SimpleNamespace(id=uuid4()))


def live_event() -> ProgressEvent:
    status = StatusView("p", ProjectState.INITIALIZING, (), None, 4, AT)
    return ProgressEvent("p", 4, EventType.STEP_PROGRESS, AT, None, status)


def deliver(payload: InitProgressEvent, document: str, context: Any, project: str = "p") -> Any:
    """What graphql-core does for one subscriber and one event."""
    subscription = SharedEventExecutor.build(
        schema._schema,
        parse(document),
        context_value=context,
        raw_variable_values={"id": project},
    )
    assert isinstance(subscription, SharedEventExecutor)
    result = subscription.build_per_event_executor(payload).execute_operation(False)
    assert isinstance(result, ExecutionResult) and result.errors is None
    return result


def test_one_event_object_has_one_graphql_view() -> None:
    event = live_event()
    first = InitProgressEvent.from_event(event, timedelta(minutes=5))
    assert InitProgressEvent.from_event(event, timedelta(minutes=5)) is first


def test_subscribers_of_the_same_document_share_one_result() -> None:
    payload = InitProgressEvent.from_event(live_event(), timedelta(minutes=5))
    first = deliver(payload, STATUS_ONLY, ALICE)
    assert first.data == {"initProgress": {"seq": 4, "status": {"status": "INITIALIZING"}}}
    assert deliver(payload, STATUS_ONLY, ALICE) is first


def test_another_document_other_variables_or_another_user_are_executed_on_their_own() -> None:
    payload = InitProgressEvent.from_event(live_event(), timedelta(minutes=5))
    first = deliver(payload, STATUS_ONLY, ALICE)
    other_document = deliver(payload, WITH_TYPE, ALICE)
    assert other_document.data == {"initProgress": {"seq": 4, "type": "STEP_PROGRESS"}}
    assert deliver(payload, STATUS_ONLY, BOB) is not first
    assert deliver(payload, STATUS_ONLY, ALICE, project="q") is not first


def test_a_new_event_is_executed_again() -> None:
    first = deliver(InitProgressEvent.from_event(live_event(), timedelta(0)), STATUS_ONLY, ALICE)
    again = deliver(InitProgressEvent.from_event(live_event(), timedelta(0)), STATUS_ONLY, ALICE)
    assert again is not first and again.data == first.data
