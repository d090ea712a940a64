"""The Strawberry aiohttp view with our authentication on both transports.

HTTP: ``Authorization: Bearer <token>``. WebSocket: the ``authorization`` key
(any case) of the ``connection_init`` payload, or the upgrade request's header
for non-browser clients; a token in the URL is ignored. No valid token: the
socket is refused before ``connection_ack``.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import timedelta
from typing import Any

import orjson
from aiohttp import web
from strawberry.aiohttp.views import GraphQLView
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UnsetType

from initflow.errors import Unauthenticated
from initflow.schema.context import Context
from initflow.services.auth import authenticate, parse_authorization
from initflow.services.container import Services
from initflow.web.graphiql import render_graphql_ide

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


class FrameEncoder:
    """JSON frames for the WebSocket; a result's data is encoded once however many receive it.

    A live event's result data is one object shared by every subscriber of the same
    subscription (``initflow.schema.shared_events``), so its text is kept by object
    identity for the most recent results. Entries hold their object, so an identity
    cannot be reused while it is cached; shared results are never mutated.
    """

    def __init__(self, size: int = 256) -> None:
        self._size = size
        self._texts: OrderedDict[int, tuple[object, str]] = OrderedDict()

    def encode(self, message: object) -> str:
        frame = _result_frame(message)
        if frame is None:
            return orjson.dumps(message).decode()
        operation_id, kind, data = frame
        body = self._data_text(data)
        quoted_id = orjson.dumps(operation_id).decode()
        return f'{{"id":{quoted_id},"type":"{kind}","payload":{{"data":{body}}}}}'

    def _data_text(self, data: object) -> str:
        entry = self._texts.get(id(data))
        if entry is not None and entry[0] is data:
            return entry[1]
        text = orjson.dumps(data).decode()
        self._texts[id(data)] = (data, text)
        if len(self._texts) > self._size:
            self._texts.popitem(last=False)
        return text


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


class InitflowGraphQLView(GraphQLView[Context, None]):
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
        self._frames = FrameEncoder()

    def encode_json(self, data: object) -> str:
        return self._frames.encode(data)

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
