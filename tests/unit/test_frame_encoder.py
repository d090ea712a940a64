"""WebSocket frames: a shared result is encoded once; each frame is still exactly its message."""

from __future__ import annotations

import json

from initflow.web.frames import FrameEncoder, text_frame


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


def test_relayed_frames_are_single_unmasked_text_frames_of_every_length_class() -> None:
    for size, header in (
        (125, bytes([0x81, 125])),
        (126, bytes([0x81, 126, 0, 126])),
        (65_535, bytes([0x81, 126, 0xFF, 0xFF])),
        (65_536, bytes([0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0])),
    ):
        payload = b"x" * size
        assert text_frame(payload) == header + payload


def test_a_relayed_next_frame_carries_the_same_message_as_strawberrys() -> None:
    encoder = FrameEncoder()
    data = {"initProgress": {"seq": 4}}
    frame = encoder.next_frame('op"1', data)
    message = {"id": 'op"1', "type": "next", "payload": {"data": data}}
    assert frame[2:] == encoder.encode(message).encode()
    assert json.loads(frame[2:]) == message
