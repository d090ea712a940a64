"""The progress event: what the bus carries and what ``progress_events`` stores.

Each event carries the full (small) status after the change, so a client can
always render from the last event alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any

import orjson

from initflow.status import StatusView


class EventType(StrEnum):
    SNAPSHOT = "SNAPSHOT"
    STEP_STARTED = "STEP_STARTED"
    STEP_PROGRESS = "STEP_PROGRESS"
    STEP_COMPLETED = "STEP_COMPLETED"
    STEP_SKIPPED = "STEP_SKIPPED"
    STEP_FAILED = "STEP_FAILED"
    STEP_RETRYING = "STEP_RETRYING"
    INITIALIZATION_COMPLETED = "INITIALIZATION_COMPLETED"
    INITIALIZATION_FAILED = "INITIALIZATION_FAILED"
    INITIALIZATION_CANCELED = "INITIALIZATION_CANCELED"
    INITIALIZATION_RETRIED = "INITIALIZATION_RETRIED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_EVENTS


TERMINAL_EVENTS = frozenset(
    {
        EventType.INITIALIZATION_COMPLETED,
        EventType.INITIALIZATION_FAILED,
        EventType.INITIALIZATION_CANCELED,
    }
)


@dataclass(frozen=True)
class ProgressEvent:
    project_id: str
    seq: int
    type: EventType
    at: datetime
    step_name: str | None
    status: StatusView
    derived_views: dict[object, object] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )
    """Views built from this event (its GraphQL form), shared by every local subscriber."""

    @property
    def ends_stream(self) -> bool:
        """A terminal event, or a snapshot of a project that is already finished."""
        return self.type.is_terminal or (
            self.type is EventType.SNAPSHOT and self.status.status.is_terminal
        )

    def payload(self) -> dict[str, Any]:
        """The stored form (project and seq live in their own columns)."""
        return {
            "type": self.type.value,
            "at": self.at.isoformat(),
            "step": self.step_name,
            "status": self.status.to_json(),
        }

    @cached_property
    def payload_json(self) -> str:
        """``payload()`` as JSON, encoded once for the log and the bus."""
        head = orjson.dumps(
            {"type": self.type.value, "at": self.at.isoformat(), "step": self.step_name}
        ).decode()
        return f'{head[:-1]},"status":{self.status.to_json_text()}}}'

    def to_wire(self) -> bytes:
        head = orjson.dumps({"projectId": self.project_id, "seq": self.seq}).decode()
        return f"{head[:-1]},{self.payload_json[1:]}".encode()

    @classmethod
    def from_payload(cls, project_id: str, seq: int, payload: dict[str, Any]) -> ProgressEvent:
        return cls(
            project_id=project_id,
            seq=seq,
            type=EventType(payload["type"]),
            at=datetime.fromisoformat(payload["at"]),
            step_name=payload["step"],
            status=StatusView.from_json(payload["status"]),
        )

    @classmethod
    def from_payload_json(cls, project_id: str, seq: int, text: str) -> ProgressEvent:
        """An event read back from the log (``payload_json`` as stored)."""
        return cls.from_payload(project_id, seq, orjson.loads(text))

    @classmethod
    def from_wire(cls, data: bytes | str) -> ProgressEvent:
        body = orjson.loads(data)
        return cls.from_payload(body["projectId"], body["seq"], body)


def encode_events(events: Sequence[ProgressEvent]) -> bytes:
    """One bus message for one commit's events (a JSON array, in seq order)."""
    return b"[" + b",".join(e.to_wire() for e in events) + b"]"


def decode_events(data: bytes | str) -> list[ProgressEvent]:
    """The events of one bus message; a single event object is accepted too."""
    body = orjson.loads(data)
    bodies = body if isinstance(body, list) else [body]
    return [ProgressEvent.from_payload(b["projectId"], b["seq"], b) for b in bodies]
