"""What goes on the WebSocket: JSON messages and, for relayed events, whole frames."""

from __future__ import annotations

import struct
from collections import OrderedDict

import orjson


class FrameEncoder:
    """JSON frames for the WebSocket; a result's data is encoded once however many receive it.

    A live event's result data is one object shared by every subscriber of the same
    subscription (``initflow.schema.shared_events``), so its text is kept by object
    identity for the most recent results. Entries hold their object, so an identity
    cannot be reused while it is cached; shared results are never mutated.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._bodies: OrderedDict[int, tuple[object, bytes]] = OrderedDict()

    def encode(self, message: object) -> str:
        frame = _result_frame(message)
        if frame is None:
            return orjson.dumps(message).decode()
        operation_id, kind, data = frame
        return self._data_message(operation_id, kind.encode(), data).decode()

    def next_frame(self, operation_id: str, data: object) -> bytes:
        """The WebSocket frame of a ``next`` message carrying ``data`` alone."""
        return text_frame(self._data_message(operation_id, b"next", data))

    def _data_message(self, operation_id: str, kind: bytes, data: object) -> bytes:
        return b'{"id":%b,"type":"%b","payload":{"data":%b}}' % (
            orjson.dumps(operation_id),
            kind,
            self._data_json(data),
        )

    def _data_json(self, data: object) -> bytes:
        entry = self._bodies.get(id(data))
        if entry is not None and entry[0] is data:
            return entry[1]
        body = orjson.dumps(data)
        self._bodies[id(data)] = (data, body)
        if len(self._bodies) > self._size:
            self._bodies.popitem(last=False)
        return body


def _result_frame(message: object) -> tuple[str, str, object] | None:
    """(id, type, data) of a subscription result frame that carries data only."""
    if not isinstance(message, dict) or message.get("type") not in ("next", "data"):
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict) or payload.keys() != {"data"}:
        return None
    operation_id = message.get("id")
    if not isinstance(operation_id, str):
        return None
    return operation_id, str(message["type"]), payload["data"]


TEXT_OPCODE = 0x1


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2; a server never masks)."""
    return frame_header(TEXT_OPCODE, len(payload)) + payload


def frame_header(opcode: int, size: int, *, masked: bool = False) -> bytes:
    """The header of one final frame of ``size`` bytes; ``masked``: a client's, whose
    4-byte masking key follows the header (the stream bench's client sends those)."""
    first, mask = 0x80 | opcode, 0x80 if masked else 0
    if size < 126:
        return struct.pack("!BB", first, mask | size)
    if size < 1 << 16:
        return struct.pack("!BBH", first, mask | 126, size)
    return struct.pack("!BBQ", first, mask | 127, size)
