"""The Strawberry aiohttp view with our authentication on both transports.

HTTP: ``Authorization: Bearer <token>``. WebSocket: the ``authorization`` key
(any case) of the ``connection_init`` payload, or the upgrade request's header
for non-browser clients; a token in the URL is ignored. No valid token: the
socket is refused before ``connection_ack``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UnsetType

from initflow.errors import Unauthenticated
from initflow.schema.context import Context
from initflow.services.auth import authenticate, parse_authorization
from initflow.services.container import Services
from initflow.web.frames import FrameEncoder
from initflow.web.graphiql import render_graphql_ide
from initflow.web.transport import RelayingTransportWSHandler

MAX_FRAME_BYTES = 64 * 1024
SUBSCRIPTIONS_PER_CONNECTION = 20
CONTEXT_KEY = web.RequestKey("initflow_context", Context)


def _authorization_param(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class InitflowGraphQLView(GraphQLView[Context, None]):
    graphql_transport_ws_handler_class = RelayingTransportWSHandler

    def __init__(self, services: Services, **kwargs: Any) -> None:
        settings = services.settings
        origins = settings.allowed_origins or (settings.base_url,)
        super().__init__(
            kwargs.pop("schema"),
            connection_init_wait_timeout=timedelta(seconds=settings.ws_init_timeout_seconds),
            allowed_origins=origins,
            max_subscriptions_per_connection=SUBSCRIPTIONS_PER_CONNECTION,
            **kwargs,
        )
        self.services = services
        self._connections: dict[str, int] = {}
        self.frames = FrameEncoder()

    def encode_json(self, data: object) -> str:
        return self.frames.encode(data)

    async def render_graphql_ide(self, request: web.Request) -> web.Response:
        """The playground with its assets served locally (see ``initflow.web.graphiql``)."""
        return await render_graphql_ide(request)

    async def __call__(self, request: web.Request) -> web.StreamResponse:
        try:
            return await super().__call__(request)
        finally:
            context = request.get(CONTEXT_KEY)
            if context is not None and context.extra.get("connection_counted"):
                self._release_connection(str(context.require_user().id))

    async def create_websocket_response(
        self, request: web.Request, subprotocol: str | None
    ) -> web.WebSocketResponse:
        """Server pings (a dead peer is dropped), 64 KiB frames, no compression."""
        ws = web.WebSocketResponse(
            protocols=[subprotocol] if subprotocol else [],
            heartbeat=self.services.settings.ws_heartbeat_seconds,
            max_msg_size=MAX_FRAME_BYTES,
            compress=False,
        )
        await ws.prepare(request)
        return ws

    def _release_connection(self, user_id: str) -> None:
        remaining = self._connections.get(user_id, 1) - 1
        if remaining > 0:
            self._connections[user_id] = remaining
        else:
            self._connections.pop(user_id, None)

    async def get_context(
        self, request: web.Request, response: web.Response | web.WebSocketResponse
    ) -> Context:
        context = Context(services=self.services, request=request, response=response)
        request[CONTEXT_KEY] = context
        token = parse_authorization(request.headers.get("Authorization"))
        if token is not None:
            try:
                context.user = await authenticate(token)
            except Unauthenticated as exc:
                context.extra["auth_error"] = exc
        return context

    async def on_ws_connect(self, context: Context) -> UnsetType | dict[str, object] | None:
        header = _authorization_param(context.connection_params)
        if header is not None:
            token = parse_authorization(header)
            try:
                context.user = await authenticate(token)
            except Unauthenticated as exc:
                raise ConnectionRejectionError({"message": exc.message}) from exc
        if context.user is None:
            raise ConnectionRejectionError({"message": Unauthenticated().message})
        user_id = str(context.user.id)
        if self._connections.get(user_id, 0) >= self.services.settings.ws_connections_per_user:
            raise ConnectionRejectionError({"message": "Too many open connections for this user."})
        self._connections[user_id] = self._connections.get(user_id, 0) + 1
        context.extra["connection_counted"] = True
        return await super().on_ws_connect(context)
