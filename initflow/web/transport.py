"""graphql-transport-ws whose operations may have live events relayed to the socket.

Each operation runs in its own task with a ``LiveRelay`` (``schema/live_relay``)
that writes a ``next`` frame straight to the connection's transport. It refuses,
so the event takes Strawberry's path and waits for the socket like any other
frame, when the operation has completed or been forgotten, when the socket is
closing, or when the transport already holds more than ``WRITE_BUFFER_LIMIT``
unsent bytes (a slow client is not buffered without bound).
"""

from __future__ import annotations

from functools import partial

from strawberry.aiohttp.views import AiohttpWebSocketAdapter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
    Operation,
)

from initflow.schema.context import Context
from initflow.schema.live_relay import CURRENT_RELAY, LiveRelay
from initflow.web.frames import FrameEncoder

WRITE_BUFFER_LIMIT = 64 * 1024


class RelayingTransportWSHandler(BaseGraphQLTransportWSHandler[Context, None]):
    async def run_operation(self, operation: Operation[Context, None]) -> None:
        token = CURRENT_RELAY.set(self._relay_for(operation))
        try:
            await super().run_operation(operation)
        finally:
            CURRENT_RELAY.reset(token)

    def _relay_for(self, operation: Operation[Context, None]) -> LiveRelay | None:
        frames = getattr(self.view, "frames", None)
        relays = getattr(self.schema, "relays_live_results", False)
        if not (relays and isinstance(frames, FrameEncoder)):
            return None
        if not isinstance(self.websocket, AiohttpWebSocketAdapter):
            return None
        return LiveRelay(partial(self._write_next, operation, self.websocket, frames))

    def _write_next(
        self,
        operation: Operation[Context, None],
        socket: AiohttpWebSocketAdapter,
        frames: FrameEncoder,
        data: object,
    ) -> bool:
        if operation.completed or self.operations.get(operation.id) is not operation:
            return False
        transport = socket.request.transport
        if socket.ws.closed or transport is None or transport.is_closing():
            return False
        if transport.get_write_buffer_size() > WRITE_BUFFER_LIMIT:
            return False
        transport.write(frames.next_frame(operation.id, data))
        return True
