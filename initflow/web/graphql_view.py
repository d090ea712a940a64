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

CONNECTION_INIT_TIMEOUT = timedelta(seconds=10)


def _authorization_param(params: Any) -> str | None:
    if not isinstance(params, dict):
        return None
    for key, value in params.items():
        if isinstance(key, str) and key.lower() == "authorization" and isinstance(value, str):
            return value
    return None


class InitflowGraphQLView(GraphQLView[Context, None]):
    def __init__(self, services: Services, **kwargs: Any) -> None:
        settings = services.settings
        origins = settings.allowed_origins or (settings.base_url,)
        super().__init__(
            kwargs.pop("schema"),
            connection_init_wait_timeout=CONNECTION_INIT_TIMEOUT,
            allowed_origins=origins,
            max_subscriptions_per_connection=20,
            **kwargs,
        )
        self.services = services

    async def get_context(
        self, request: web.Request, response: web.Response | web.WebSocketResponse
    ) -> Context:
        context = Context(services=self.services, request=request, response=response)
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
        return await super().on_ws_connect(context)
