"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from tortoise.exceptions import BaseORMException

from initflow.bus import ProgressBus
from initflow.models import User


def health_routes(bus: ProgressBus, runner_alive: Callable[[], bool | None]) -> list[web.RouteDef]:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        checks: dict[str, str] = {}
        try:
            await User.all().limit(1).values_list("id", flat=True)
            checks["database"] = "ok"
        except (BaseORMException, OSError) as exc:
            checks["database"] = f"error: {type(exc).__name__}"
        checks["bus"] = "ok" if await bus.ping() else "error: unreachable"
        alive = runner_alive()
        if alive is not None:
            checks["runner"] = "ok" if alive else "error: claim loop not running"
        ready = all(v == "ok" for v in checks.values())
        return web.json_response(
            {"status": "ok" if ready else "unavailable", "checks": checks},
            status=200 if ready else 503,
        )

    return [web.get("/healthz", healthz), web.get("/readyz", readyz)]
