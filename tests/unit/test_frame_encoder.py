"""WebSocket frames: a shared result is encoded once; each frame is still exactly its message."""

from __future__ import annotations

import json

from initflow.web.frames import FrameEncoder


def test_frames_for_one_shared_result_carry_each_subscribers_own_id() -> None:
    encoder = FrameEncoder()
    data = {"initProgress": {"seq": 4, "message": 'quote " and \u00e9'}}
    first = {"id": "a1", "type": "next", "payload": {"data": data}}
    second = {"id": 'b"2', "type": "next", "payload": {"data": data}}
    assert json.loads(encoder.encode(first)) == first
    assert json.loads(encoder.encode(second)) == second


def test_frames_with_errors_or_of_other_kinds_are_encoded_whole() -> None:
    encoder = FrameEncoder()
    with_errors = {"id": "a", "type": "next", "payload": {"data": None, "errors": [{"m": 1}]}}
    legacy = {"id": "a", "type": "data", "payload": {"data": {"x": 1}}}
    for message in (with_errors, legacy, {"type": "connection_ack"}, {"data": {"type": "next"}}):
        assert json.loads(encoder.encode(message)) == message


def test_a_new_result_object_gets_its_own_text() -> None:
    encoder = FrameEncoder(size=1)
    first = {"x": 1}
    encoder.encode({"id": "a", "type": "next", "payload": {"data": first}})
    second = {"x": 2}  # evicts the first; a new object never reuses the cached text
    frame = encoder.encode({"id": "a", "type": "next", "payload": {"data": second}})
    assert json.loads(frame)["payload"]["data"] == {"x": 2}
