"""A small GraphQL client: queries over HTTP, subscriptions over graphql-transport-ws."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp


class ApiError(Exception):
    """The API answered with errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {}
        self.code = str(first.get("extensions", {}).get("code", "ERROR"))
        super().__init__(first.get("message", "request failed"))


class ApiClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.token}"}
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.graphql_url,
                json={"query": query, "variables": variables or {}},
                headers=headers,
            ) as response,
        ):
            body = await response.json(content_type=None)
        if body.get("errors"):
            raise ApiError(body["errors"])
        data: dict[str, Any] = body["data"]
        return data

    async def subscribe(
        self, query: str, variables: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each ``next`` payload's data until the server completes the subscription."""
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                self.graphql_url, protocols=("graphql-transport-ws",), origin=self.url
            ) as ws,
        ):
            await ws.send_json(
                {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
            )
            ack = await ws.receive_json()
            if ack.get("type") != "connection_ack":
                raise ApiError(
                    [{"message": "connection refused", "extensions": {"code": "UNAUTHENTICATED"}}]
                )
            operation = str(uuid.uuid4())
            await ws.send_json(
                {
                    "id": operation,
                    "type": "subscribe",
                    "payload": {"query": query, "variables": variables},
                }
            )
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    break
                frame = json.loads(message.data)
                kind = frame.get("type")
                if kind == "ping":
                    await ws.send_json({"type": "pong"})
                elif kind == "next":
                    payload = frame["payload"]
                    if payload.get("errors"):
                        raise ApiError(payload["errors"])
                    yield payload["data"]
                elif kind == "error":
                    raise ApiError(frame["payload"])
                elif kind == "complete":
                    return
            raise ConnectionError("connection closed before the subscription completed")
