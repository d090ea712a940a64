"""A small GraphQL client: queries over HTTP, subscriptions over graphql-transport-ws.

Two kinds of trouble, kept apart because the commands treat them differently:

- ``ApiError``: the server answered and said no (bad token, not found, bad input). Retrying
  the same request would get the same answer.
- ``TransportError`` (a ``ConnectionError``): no usable answer — refused, reset, timed out,
  a proxy's 502, a socket closed before the subscription completed. Worth retrying.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from initflow import __version__

REQUEST_TIMEOUT_SECONDS = 30.0
# Client-side WebSocket pings: a server that vanished without closing the socket (power
# loss, a dropped route) is noticed within about this long, not at the next TCP timeout.
HEARTBEAT_SECONDS = 10.0
# graphql-transport-ws close codes that mean "no" rather than "try again".
_CLOSE_FORBIDDEN = 4403
_CLOSE_BAD_REQUEST = 4400


class ApiError(Exception):
    """The API answered with errors."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0] if errors else {}
        self.code = str((first.get("extensions") or {}).get("code", "ERROR"))
        super().__init__(first.get("message", "request failed"))

    @classmethod
    def of(cls, code: str, message: str) -> ApiError:
        return cls([{"message": message, "extensions": {"code": code}}])


class TransportError(ConnectionError):
    """No usable answer from the server (worth retrying)."""


def _unreachable(url: str, exc: BaseException) -> TransportError:
    """A short reason: "cannot reach URL: Connection refused", not aiohttp's repr."""
    os_error = getattr(exc, "os_error", None)
    reason = getattr(os_error, "strerror", None) or str(exc) or type(exc).__name__
    return TransportError(f"cannot reach {url}: {reason}")


def _errors(payload: Any) -> list[dict[str, Any]]:
    if isinstance(payload, list):
        return [e if isinstance(e, dict) else {"message": str(e)} for e in payload]
    if isinstance(payload, dict):
        return [payload]
    return [{"message": str(payload)}]


class ApiClient:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.token = token

    @property
    def graphql_url(self) -> str:
        return f"{self.url}/graphql"

    @property
    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", "User-Agent": f"initflow/{__version__}"}

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(
                    self.graphql_url,
                    json={"query": query, "variables": variables or {}},
                    headers=self._headers,
                ) as response,
            ):
                text = await response.text()
                status = response.status
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unreachable(self.url, exc) from exc
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TransportError(f"{self.graphql_url} answered HTTP {status} without GraphQL")
        if body.get("errors"):
            raise ApiError(_errors(body["errors"]))
        if status >= 500 or not isinstance(body.get("data"), dict):
            raise TransportError(f"{self.graphql_url} answered HTTP {status}")
        data: dict[str, Any] = body["data"]
        return data

    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any],
        *,
        on_connected: Callable[[], None] | None = None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Yield each ``next`` payload's data until the server completes the subscription.

        ``on_connected`` runs once the server acknowledged the connection. A socket that
        ends before ``complete`` raises ``TransportError``; the caller resumes with
        ``afterSeq``.
        """
        try:
            async with (
                aiohttp.ClientSession(headers={"User-Agent": f"initflow/{__version__}"}) as session,
                session.ws_connect(
                    self.graphql_url,
                    protocols=("graphql-transport-ws",),
                    heartbeat=HEARTBEAT_SECONDS,
                ) as ws,
            ):
                async for frame in self._frames(ws, query, variables, on_connected):
                    yield frame
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise ApiError.of(
                    "FORBIDDEN", f"the server refused the WebSocket ({exc.status} {exc.message})"
                ) from exc
            raise TransportError(f"WebSocket handshake failed: {exc.status}") from exc
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise _unreachable(self.url, exc) from exc

    async def _frames(
        self,
        ws: aiohttp.ClientWebSocketResponse,
        query: str,
        variables: dict[str, Any],
        on_connected: Callable[[], None] | None,
    ) -> AsyncIterator[dict[str, Any]]:
        await ws.send_json(
            {"type": "connection_init", "payload": {"authorization": f"Bearer {self.token}"}}
        )
        acknowledged = False
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            frame = json.loads(message.data)
            kind = frame.get("type")
            if kind == "connection_ack" and not acknowledged:
                acknowledged = True
                if on_connected is not None:
                    on_connected()
                await ws.send_json(
                    {
                        "id": str(uuid.uuid4()),
                        "type": "subscribe",
                        "payload": {"query": query, "variables": variables},
                    }
                )
            elif kind == "ping":
                await ws.send_json({"type": "pong"})
            elif kind == "next":
                payload = frame.get("payload") or {}
                if payload.get("errors"):
                    raise ApiError(_errors(payload["errors"]))
                yield payload["data"]
            elif kind == "error":
                raise ApiError(_errors(frame.get("payload")))
            elif kind == "complete":
                return
        # The close code tells an answer (4403, 4400) from a drop (anything else).
        code = ws.close_code
        if code == _CLOSE_FORBIDDEN:
            raise ApiError.of("FORBIDDEN", "the server refused the connection (4403 Forbidden)")
        if code == _CLOSE_BAD_REQUEST:
            raise ApiError.of("BAD_REQUEST", "the server rejected the subscription (4400)")
        raise TransportError(
            "connection closed before the subscription completed"
            + (f" (code {code})" if code is not None else "")
        )
