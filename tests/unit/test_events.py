from __future__ import annotations

import json

from initflow.events import EventType, ProgressEvent

WIRE = (
    b'{"projectId":"p","seq":2,"type":"STEP_STARTED","at":"2026-01-01T00:00:00+00:00",'
    b'"step":null,"status":{"projectId":"p","status":"initializing","progress":0,'
    b'"steps":[],"error":null,"seq":2,"updatedAt":"2026-01-01T00:00:00+00:00"}}'
)


def test_events_round_trip_through_the_wire_format() -> None:
    event = ProgressEvent.from_wire(WIRE)
    assert event.type is EventType.STEP_STARTED and event.seq == 2
    assert ProgressEvent.from_wire(event.to_wire()) == event


def test_only_terminal_events_and_finished_snapshots_end_a_stream() -> None:
    event = ProgressEvent.from_wire(WIRE)
    assert not event.ends_stream
    assert EventType.INITIALIZATION_CANCELED.is_terminal
    assert not EventType.STEP_FAILED.is_terminal


def test_the_encoded_payload_is_the_payload() -> None:
    event = ProgressEvent.from_wire(WIRE)
    assert json.loads(event.payload_json) == event.payload()
    assert json.loads(event.to_wire()) == {"projectId": "p", "seq": 2, **event.payload()}
