from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import timedelta

import strawberry

from initflow.bus import Relay
from initflow.schema.context import Info
from initflow.schema.live_relay import CURRENT_RELAY
from initflow.schema.types import InitProgressEvent
from initflow.services.projects import parse_project_id


async def init_progress(
    info: Info, project_id: strawberry.ID, after_seq: int | None = None
) -> AsyncGenerator[InitProgressEvent, None]:
    """SNAPSHOT then live events (or, with ``afterSeq``, exactly the events after it)."""
    services = info.context.services
    user = info.context.require_user()
    stall_after = services.settings.stall_after
    stream = services.progress.events(
        parse_project_id(project_id), user.id, after_seq, _relay(stall_after)
    )
    async with aclosing(stream):  # release the bus subscription as soon as the client leaves
        async for event in stream:
            yield InitProgressEvent.from_event(event, stall_after)


def _relay(stall_after: timedelta) -> Relay | None:
    """Live events straight to the socket, when the transport offers it (schema/live_relay)."""
    relay = CURRENT_RELAY.get()
    if relay is None:
        return None
    return lambda event: relay.send(InitProgressEvent.from_event(event, stall_after))
