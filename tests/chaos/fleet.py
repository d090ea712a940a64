"""Several ``initflow serve`` instances on the chaos test's own Postgres and Redis."""

from __future__ import annotations

import asyncio
import random
import signal
import time
import uuid
from pathlib import Path

import aiohttp
from e2e.processes import (
    ServiceProcess,
    cli_user_token,
    free_port,
    pg_connection,
    run_cli,
    send_signal,
)

from initflow.client.api import ApiClient, ApiError

from .servers import PostgresCluster, RedisServer

REQUEST_TIMEOUT = 10.0
# What a client sees of a dead or unready instance: refused or reset connections, error
# answers, non-JSON bodies, a WebSocket closed before its first message (TypeError).
RETRYABLE = (
    ApiError,
    aiohttp.ClientError,
    ConnectionError,
    OSError,
    ValueError,
    KeyError,
    TypeError,
)

CREATE_PROJECT = """
mutation Create($input: CreateProjectInput!) {
  createProject(input: $input) { project { id } userErrors { field message code } }
}
"""


class Fleet:
    """The serve instances; a killed one is restarted with its id on its port."""

    def __init__(self, data_dir: Path, log_dir: Path, env: dict[str, str], token: str) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.env = env
        self.token = token
        self.current: dict[str, ServiceProcess] = {}
        self.ports: dict[str, int] = {}
        self.live: set[str] = set()
        self.processes: list[ServiceProcess] = []

    async def start(self, instance_id: str) -> None:
        generation = sum(p.label.startswith(instance_id + ".") for p in self.processes) + 1
        service = ServiceProcess(
            data_dir=self.data_dir,
            log_dir=self.log_dir,
            label=f"{instance_id}.{generation}",
            env={**self.env, "INITFLOW_INSTANCE_ID": instance_id},
            port=self.ports.setdefault(instance_id, free_port()),
        )
        self.processes.append(service)
        self.current[instance_id] = service
        service.start()
        await asyncio.to_thread(service.wait_ready, 60)
        self.live.add(instance_id)

    async def kill(self, instance_id: str) -> None:
        self.live.discard(instance_id)
        service = self.current[instance_id]
        send_signal(service, signal.SIGKILL)
        assert await asyncio.to_thread(service.wait_exit, 10) == -signal.SIGKILL

    def client(self, rng: random.Random) -> ApiClient | None:
        if not self.live:
            return None
        service = self.current[rng.choice(sorted(self.live))]
        return ApiClient(service.base_url, self.token)

    def stop_all(self) -> None:
        for service in self.processes:
            service.kill()

    def describe(self, lines: int = 60) -> str:
        parts = []
        for service in self.processes:
            tail = "\n".join(service.stderr().splitlines()[-lines:])
            parts.append(f"===== {service.label} (exit {service.returncode}) =====\n{tail}")
        return "\n".join(parts)


async def create_project(
    fleet: Fleet, rng: random.Random, name: str, deadline: float
) -> tuple[str, int]:
    """createProject through random live instances until one answers; (id, attempts).

    The idempotency key makes a retry of a request whose answer was lost safe.
    """
    variables = {
        "input": {"name": name, "template": "python-service", "idempotencyKey": f"chaos-{name}"}
    }
    attempts = 0
    while True:
        attempts += 1
        client = fleet.client(rng)
        try:
            if client is None:
                raise ConnectionError("no live instance")
            async with asyncio.timeout(REQUEST_TIMEOUT):
                payload = (await client.execute(CREATE_PROJECT, variables))["createProject"]
            assert payload["userErrors"] == [], payload
            return str(payload["project"]["id"]), attempts
        except (*RETRYABLE, TimeoutError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(rng.uniform(0.1, 0.4))


async def prepare_fleet(
    postgres: PostgresCluster,
    redis_server: RedisServer,
    tmp_path: Path,
    *,
    lease_ttl: float,
    poll_interval: float,
    step_delay: float,
    extra_env: dict[str, str] | None = None,
) -> Fleet:
    """A database ``initflow`` on ``postgres`` (migrated), a user, and a fleet (not started)."""
    async with pg_connection(postgres.url()) as connection:
        await connection.execute("CREATE DATABASE initflow")
    data_dir = tmp_path / "shared-data"
    env = {
        "DATABASE_URL": postgres.url("initflow"),
        "REDIS_URL": redis_server.url,
        "INITFLOW_REDIS_PREFIX": f"initflow-chaos-{uuid.uuid4().hex[:8]}",
        "INITFLOW_LEASE_TTL_SECONDS": str(lease_ttl),
        "INITFLOW_POLL_INTERVAL_SECONDS": str(poll_interval),
        "INITFLOW_STEP_DELAY_SECONDS": str(step_delay),
        **(extra_env or {}),
    }
    await asyncio.to_thread(run_cli, data_dir, "migrate", env=env)
    token = await asyncio.to_thread(cli_user_token, data_dir, "chaos", env)
    return Fleet(data_dir, tmp_path / "logs", env, token)
