"""Shared fixtures: a real initflow app on a real SQLite file, and API helpers."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from tortoise import Tortoise

from initflow.app import create_app
from initflow.db import apply_migrations
from initflow.services.auth import create_user
from initflow.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "INITFLOW_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)
REDIS_TEST_URL = os.environ.get("INITFLOW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def postgres_url(database: str) -> str:
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + database


async def postgres_admin(*statements: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _migrate(url: str) -> None:
    await apply_migrations(url)
    await Tortoise.close_connections()


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A migrated database that each Postgres test copies (CREATE DATABASE … TEMPLATE)."""
    name = f"initflow_tpl_{os.getpid()}"
    asyncio.run(
        postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"CREATE DATABASE {name}")
    )
    asyncio.run(_migrate(postgres_url(name)))
    yield name
    asyncio.run(postgres_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The runner and API suites run on SQLite (in-process bus) and Postgres + Redis.

    Missing Postgres or Redis is an error, never a skip.
    """
    name: str = request.param
    return name


@pytest.fixture
def settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Iterator[Settings]:
    base = Settings(
        data_dir=tmp_path / "data",
        lease_ttl_seconds=5.0,
        poll_interval_seconds=0.2,
        instance_id="test-instance",
    )
    if backend == "sqlite":
        yield base
        return
    template = request.getfixturevalue("postgres_template")
    database = f"initflow_t_{uuid.uuid4().hex[:12]}"
    asyncio.run(postgres_admin(f"CREATE DATABASE {database} TEMPLATE {template}"))
    try:
        yield base.with_overrides(
            database_url=postgres_url(database),
            redis_url=REDIS_TEST_URL,
            redis_prefix=f"initflow-test-{database}",
        )
    finally:
        asyncio.run(postgres_admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)"))


@dataclass
class Api:
    """A GraphQL client bound to one user's token, over the app's test server."""

    client: TestClient[Any, Any]
    token: str

    async def query(self, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/graphql",
            json={"query": query, "variables": variables},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        body: dict[str, Any] = await response.json()
        return body

    async def data(self, query: str, **variables: Any) -> dict[str, Any]:
        body = await self.query(query, **variables)
        assert "errors" not in body, body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    async def create_project(self, name: str, **fields: Any) -> str:
        data = await self.data(
            CREATE_PROJECT, input={"name": name, "template": "python-service", **fields}
        )
        payload = data["createProject"]
        assert payload["userErrors"] == []
        project_id: str = payload["project"]["id"]
        return project_id

    async def status(self, project_id: str) -> dict[str, Any]:
        data = await self.data(PROJECT_STATUS, id=project_id)
        status: dict[str, Any] = data["projectStatus"]
        return status

    def subscribe(self, project_id: str, after_seq: int | None = None) -> Subscription:
        return Subscription(self, project_id, after_seq)


class Subscription:
    """``initProgress`` over graphql-transport-ws: iterate events until ``complete``."""

    def __init__(self, api: Api, project_id: str, after_seq: int | None) -> None:
        self.api = api
        self.variables = {"id": project_id, "after": after_seq}
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.completed = False
        self.errors: list[dict[str, Any]] | None = None

    async def __aenter__(self) -> Subscription:
        self.ws = await self.api.client.ws_connect("/graphql", protocols=("graphql-transport-ws",))
        await self.ws.send_json(
            {"type": "connection_init", "payload": {"Authorization": f"Bearer {self.api.token}"}}
        )
        ack = await self.ws.receive_json(timeout=10)
        assert ack["type"] == "connection_ack", ack
        await self.ws.send_json(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": INIT_PROGRESS, "variables": self.variables},
            }
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.ws is not None
        await self.ws.close()

    async def next_event(self, timeout: float = 30) -> dict[str, Any] | None:
        """The next event, or None once the server completed the subscription."""
        assert self.ws is not None
        while True:
            frame = json.loads(await self.ws.receive_str(timeout=timeout))
            if frame["type"] == "next":
                if frame["payload"].get("errors"):
                    self.errors = frame["payload"]["errors"]
                    return None
                event: dict[str, Any] = frame["payload"]["data"]["initProgress"]
                return event
            if frame["type"] == "error":
                self.errors = frame["payload"]
                return None
            if frame["type"] == "complete":
                self.completed = True
                return None

    async def events_until_complete(self, timeout: float = 60) -> list[dict[str, Any]]:
        events = []
        while (event := await self.next_event(timeout)) is not None:
            events.append(event)
        return events


STEP_FIELDS = """name title position status progress message attempts
    startedAt completedAt durationMs error { code message }"""
STATUS_FIELDS = f"""projectId status progress error seq updatedAt
    currentStep {{ name }} steps {{ {STEP_FIELDS} }}"""
CREATE_PROJECT = """
mutation($input: CreateProjectInput!) {
  createProject(input: $input) { project { id name slug status } userErrors { field message code } }
}"""
PROJECT_STATUS = f"query($id: ID!) {{ projectStatus(projectId: $id) {{ {STATUS_FIELDS} }} }}"
INIT_PROGRESS = f"""
subscription($id: ID!, $after: Int) {{
  initProgress(projectId: $id, afterSeq: $after) {{
    seq type at step {{ name status progress }} status {{ {STATUS_FIELDS} }}
  }}
}}"""

AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def start_app(
    aiohttp_client: Callable[..., Awaitable[TestClient[Any, Any]]], settings: Settings
) -> AsyncIterator[AppFactory]:
    """Start a real app (runner included) on ``settings``, with overrides."""

    async def start(**overrides: Any) -> TestClient[Any, Any]:
        registry = overrides.pop("registry", None)
        app = create_app(settings.with_overrides(**overrides), registry=registry)
        return await aiohttp_client(app)

    yield start


@pytest.fixture
async def api_for(start_app: AppFactory) -> AsyncIterator[Callable[..., Awaitable[Api]]]:
    client: TestClient[Any, Any] | None = None

    async def make(user: str = "alice", **overrides: Any) -> Api:
        nonlocal client
        if client is None:
            client = await start_app(**overrides)
        _, token = await create_user(user)
        return Api(client, token)

    yield make
