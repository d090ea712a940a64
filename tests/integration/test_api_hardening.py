"""A GraphQL API that clients can trust and attackers cannot abuse (issue #6 checklist)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from strawberry.extensions.validation_cache import _get_validate_cache

from initflow.app import BUS, SERVICES
from initflow.bus.redis import RedisBus
from initflow.models import Project
from initflow.schema.root import VALIDATION_CACHE_SIZE
from tests.conftest import CREATE_PROJECT, Api

TRANSPORT = ("graphql-transport-ws",)


async def open_socket(api: Api, **kwargs: Any) -> aiohttp.ClientWebSocketResponse:
    return await api.client.ws_connect("/graphql", protocols=TRANSPORT, **kwargs)


async def acked_socket(api: Api) -> aiohttp.ClientWebSocketResponse:
    ws = await open_socket(api)
    await ws.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {api.token}"}}
    )
    assert (await ws.receive_json(timeout=10))["type"] == "connection_ack"
    return ws


async def closed_with(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    while True:
        message = await ws.receive(timeout=10)
        if message.type in (
            aiohttp.WSMsgType.CLOSE,
            aiohttp.WSMsgType.CLOSED,
            aiohttp.WSMsgType.CLOSING,
        ):
            return ws.close_code


async def test_transport_ws_is_negotiated_and_unknown_subprotocols_are_refused(
    api_for: Any,
) -> None:
    api: Api = await api_for(run_runner=False)
    ws = await open_socket(api)
    assert ws.protocol == "graphql-transport-ws"
    await ws.close()
    unknown = await api.client.ws_connect("/graphql", protocols=("chat",))
    assert await closed_with(unknown) == 4406


async def test_protocol_violations_close_with_their_codes(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False, ws_init_timeout_seconds=0.5)
    early = await open_socket(api)
    await early.send_json(
        {"id": "1", "type": "subscribe", "payload": {"query": "{ viewer { name } }"}}
    )
    assert await closed_with(early) == 4401

    twice = await acked_socket(api)
    await twice.send_json({"type": "connection_init", "payload": {}})
    assert await closed_with(twice) == 4429

    malformed = await acked_socket(api)
    await malformed.send_str("{not json")
    assert await closed_with(malformed) == 4400

    silent = await open_socket(api)
    assert await closed_with(silent) == 4408


async def test_a_token_in_the_url_is_ignored(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    ws = await api.client.ws_connect(f"/graphql?token={api.token}", protocols=TRANSPORT)
    await ws.send_json({"type": "connection_init", "payload": {}})
    assert await closed_with(ws) == 4403


async def test_websocket_upgrades_from_other_origins_are_refused_before_the_upgrade(
    api_for: Any,
) -> None:
    api: Api = await api_for(run_runner=False, allowed_origins=("https://app.example",))
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await api.client.ws_connect("/graphql", protocols=TRANSPORT, origin="https://evil.example")
    assert refused.value.status == 403
    allowed = await api.client.ws_connect(
        "/graphql", protocols=TRANSPORT, origin="https://app.example"
    )
    await allowed.close()
    no_origin = await open_socket(api)
    await no_origin.close()


async def test_a_peer_that_never_answers_pings_is_disconnected(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False, ws_heartbeat_seconds=0.3)
    ws = await api.client.ws_connect("/graphql", protocols=TRANSPORT, autoping=False)
    await ws.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {api.token}"}}
    )
    pinged = False
    while True:
        message = await ws.receive(timeout=5)
        if message.type is aiohttp.WSMsgType.PING:
            pinged = True
        if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
            break
    assert pinged


async def test_frames_are_capped_at_64_kib_and_never_compressed(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    ws = await api.client.ws_connect("/graphql", protocols=TRANSPORT, compress=15)
    assert ws.compress == 0
    await ws.send_str("x" * (65 * 1024))
    assert await closed_with(ws) == 1009


async def test_subscriptions_and_connections_per_user_are_capped(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False, ws_connections_per_user=2)
    first, second = await acked_socket(api), await acked_socket(api)
    third = await open_socket(api)
    await third.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {api.token}"}}
    )
    assert await closed_with(third) == 4403
    await first.close()
    # A slot freed by a closed connection can be used again.
    replacement = await acked_socket(api)
    await replacement.close()
    await second.close()


async def test_subscriptions_release_their_bus_resources_on_every_kind_of_disconnect(
    api_for: Any,
) -> None:
    # No runner: its executor would hold a bus subscription of its own for the project.
    api: Api = await api_for(run_runner=False)
    project_id = await api.create_project("Leak Check")
    fanout = api.client.app[BUS].fanout  # type: ignore[attr-defined]
    channel = f"{api.client.app[SERVICES].settings.redis_prefix}:progress:{project_id}"

    async def subscribed() -> aiohttp.ClientWebSocketResponse:
        ws = await acked_socket(api)
        query = "subscription($id: ID!) { initProgress(projectId: $id) { seq } }"
        await ws.send_json(
            {
                "id": "s",
                "type": "subscribe",
                "payload": {"query": query, "variables": {"id": project_id}},
            }
        )
        assert (await ws.receive_json(timeout=10))["type"] == "next"
        assert fanout.count(project_id) >= 1
        return ws

    bus = api.client.app[BUS]

    async def released() -> None:
        for _ in range(100):
            if fanout.count(project_id) == 0:
                break
            await asyncio.sleep(0.02)
        else:
            raise AssertionError("bus subscription still held")
        if isinstance(bus, RedisBus):  # and the shared upstream channel is given back
            for _ in range(100):
                if not (await bus._redis.pubsub_numsub(channel))[0][1]:
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("Redis channel still subscribed")

    ws = await subscribed()
    await ws.send_json({"id": "s", "type": "complete"})
    await released()
    await ws.close()

    ws = await subscribed()
    await ws.close()
    await released()

    ws = await subscribed()
    transport = ws._response.connection.transport  # abrupt TCP abort, no close frame
    assert transport is not None
    transport.abort()
    await released()


DEEP = (
    "{ viewer { name } "
    + "".join("projects { edges { node { " for _ in range(4))
    + "id"
    + " } } }" * 4
    + " }"
)


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        (DEEP, "exceeds maximum operation depth"),
        ("{ " + " ".join(f"a{i}: viewer {{ name }}" for i in range(20)) + " }", "aliases"),
        ("{ viewer { " + " ".join(["name"] * 2100) + " } }", "token"),
    ],
    ids=["depth", "aliases", "tokens"],
)
async def test_validation_limits_apply_over_http_and_websocket(
    api_for: Any, query: str, fragment: str
) -> None:
    api: Api = await api_for(run_runner=False)
    body = await api.query(query)
    assert fragment in body["errors"][0]["message"].lower()
    ws = await acked_socket(api)
    await ws.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
    message = await ws.receive(timeout=10)
    if message.type is aiohttp.WSMsgType.TEXT:
        frame = message.json()
        assert frame["type"] == "error"
        assert fragment in frame["payload"][0]["message"].lower()
    else:  # Strawberry closes the socket on a document it cannot parse (4400 + reason)
        assert ws.close_code == 4400
        assert fragment in (message.extra or "").lower()
    await ws.close()


async def test_a_document_seen_before_is_not_validated_again(api_for: Any) -> None:
    """The limits still apply (above), yet a repeated document costs no second validation."""
    api: Api = await api_for(run_runner=False)
    validate = _get_validate_cache(VALIDATION_CACHE_SIZE)
    document = "query RepeatedForTheCache { viewer { name } }"
    assert "errors" not in await api.query(document)
    hits = validate.cache_info().hits
    assert "errors" not in await api.query(document)
    assert validate.cache_info().hits == hits + 1


async def test_introspection_can_be_switched_off_on_both_transports(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False, introspection=False)
    body = await api.query("{ __schema { types { name } } }")
    assert "introspection" in body["errors"][0]["message"].lower()
    ws = await acked_socket(api)
    await ws.send_json(
        {"id": "1", "type": "subscribe", "payload": {"query": "{ __schema { types { name } } }"}}
    )
    assert (await ws.receive_json(timeout=10))["type"] == "error"
    await ws.close()


async def test_http_hygiene_no_mutation_over_get_no_text_plain_no_batches(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    headers = {"Authorization": f"Bearer {api.token}"}
    over_get = await api.client.get(
        "/graphql",
        params={
            "query": 'mutation { createProject(input: {name: "x", template: "static-site"}) '
            "{ userErrors { code } } }"
        },
        headers=headers,
    )
    assert over_get.status in (400, 405)
    plain = await api.client.post(
        "/graphql",
        data='{"query": "{ viewer { name } }"}',
        headers={**headers, "Content-Type": "text/plain"},
    )
    assert plain.status in (400, 415)
    batch = await api.client.post(
        "/graphql", json=[{"query": "{ viewer { name } }"}] * 2, headers=headers
    )
    assert batch.status == 400
    assert await Project.all().count() == 0


async def test_the_same_idempotency_key_for_another_request_is_a_user_error(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    first = {"name": "Keyed", "template": "static-site", "idempotencyKey": "k"}
    await api.data(CREATE_PROJECT, input=first)
    other = (await api.data(CREATE_PROJECT, input={**first, "name": "Other"}))["createProject"]
    assert [e["code"] for e in other["userErrors"]] == ["IDEMPOTENCY_KEY_REUSED"]
    assert await Project.all().count() == 1


async def test_create_is_rate_limited_per_user_on_http_and_websocket_alike(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False, create_burst=2, create_rate_per_minute=1)
    for index in range(2):
        await api.create_project(f"Allowed {index}")
    over_http = await api.data(CREATE_PROJECT, input={"name": "Third", "template": "static-site"})
    assert [e["code"] for e in over_http["createProject"]["userErrors"]] == ["RATE_LIMITED"]
    ws = await acked_socket(api)
    await ws.send_json(
        {
            "id": "m",
            "type": "subscribe",
            "payload": {
                "query": CREATE_PROJECT,
                "variables": {"input": {"name": "Fourth", "template": "static-site"}},
            },
        }
    )
    frame = await ws.receive_json(timeout=10)
    assert frame["type"] == "next"
    errors = frame["payload"]["data"]["createProject"]["userErrors"]
    assert [e["code"] for e in errors] == ["RATE_LIMITED"]
    await ws.close()
    assert await Project.all().count() == 2
