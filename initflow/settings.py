"""Configuration, read once from the environment into a frozen object."""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path

from initflow.errors import ConfigurationError

SERVICE_URL_VARIABLES = ("DATABASE_URL", "REDIS_URL")


def without_configuration(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without anything that configures initflow (``INITFLOW_*`` and the
    service URLs): what a child process starts from when its parent sets exactly the
    configuration it means (tests, benchmarks)."""
    return {
        k: v
        for k, v in environ.items()
        if not k.startswith("INITFLOW_") and k not in SERVICE_URL_VARIABLES
    }


def _float(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be a number, got {raw!r}") from exc
    if value < 0:
        raise ConfigurationError(f"{name} must not be negative, got {raw!r}")
    return value


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigurationError(f"{name} must be an integer, got {raw!r}") from exc


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be 1/0, true/false, yes/no or on/off, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment.

    The instance id defaults to one persisted in the data dir, so a restarted
    instance recognises its own leases and resumes those runs at once.
    """

    data_dir: Path = Path(".initflow")
    database_url: str = ""
    redis_url: str | None = None
    redis_prefix: str = "initflow"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = ""
    instance_id: str = ""
    lease_ttl_seconds: float = 10.0
    poll_interval_seconds: float = 1.0
    step_delay_seconds: float = 0.0
    step_timeout_seconds: float = 300.0
    stall_after_seconds: float = 60.0
    allowed_origins: tuple[str, ...] = ()
    introspection: bool = True
    graphql_ide: bool = True
    ws_heartbeat_seconds: float = 30.0
    ws_init_timeout_seconds: float = 10.0
    ws_connections_per_user: int = 20
    create_rate_per_minute: float = 120.0
    create_burst: int = 30
    webhook_url: str | None = None
    run_runner: bool = True
    crash_at: str | None = None
    extra_template_dirs: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        data_dir = Path(env.get("INITFLOW_DATA_DIR") or ".initflow").resolve()
        host = env.get("INITFLOW_HOST") or "127.0.0.1"
        port = _int(env, "INITFLOW_PORT", 8000)
        origins = tuple(
            o.strip() for o in (env.get("INITFLOW_ALLOWED_ORIGINS") or "").split(",") if o.strip()
        )
        template_dirs = tuple(
            Path(p) for p in (env.get("INITFLOW_TEMPLATE_DIRS") or "").split(os.pathsep) if p
        )
        return cls(
            data_dir=data_dir,
            database_url=env.get("DATABASE_URL") or "",
            redis_url=env.get("REDIS_URL") or None,
            redis_prefix=env.get("INITFLOW_REDIS_PREFIX") or "initflow",
            host=host,
            port=port,
            public_url=(env.get("INITFLOW_PUBLIC_URL") or "").rstrip("/"),
            instance_id=env.get("INITFLOW_INSTANCE_ID") or "",
            lease_ttl_seconds=_float(env, "INITFLOW_LEASE_TTL_SECONDS", 10.0),
            poll_interval_seconds=_float(env, "INITFLOW_POLL_INTERVAL_SECONDS", 1.0),
            step_delay_seconds=_float(env, "INITFLOW_STEP_DELAY_SECONDS", 0.0),
            step_timeout_seconds=_float(env, "INITFLOW_STEP_TIMEOUT_SECONDS", 300.0),
            stall_after_seconds=_float(env, "INITFLOW_STALL_AFTER_SECONDS", 60.0),
            allowed_origins=origins,
            introspection=_flag(env, "INITFLOW_INTROSPECTION", True),
            graphql_ide=_flag(env, "INITFLOW_GRAPHQL_IDE", True),
            ws_heartbeat_seconds=_float(env, "INITFLOW_WS_HEARTBEAT_SECONDS", 30.0),
            ws_init_timeout_seconds=_float(env, "INITFLOW_WS_INIT_TIMEOUT_SECONDS", 10.0),
            ws_connections_per_user=_int(env, "INITFLOW_WS_CONNECTIONS_PER_USER", 20),
            create_rate_per_minute=_float(env, "INITFLOW_CREATE_RATE_PER_MINUTE", 120.0),
            create_burst=_int(env, "INITFLOW_CREATE_BURST", 30),
            webhook_url=env.get("INITFLOW_WEBHOOK_URL") or None,
            crash_at=env.get("INITFLOW_CRASH_AT") or None,
            run_runner=_flag(env, "INITFLOW_RUNNER", True),
            extra_template_dirs=template_dirs,
        )

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite://{self.data_dir / 'initflow.sqlite3'}"

    @property
    def stall_after(self) -> timedelta:
        return timedelta(seconds=self.stall_after_seconds)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def repositories_dir(self) -> Path:
        return self.data_dir / "repositories"

    @property
    def workspaces_dir(self) -> Path:
        return self.data_dir / "workspaces"

    def resolved_instance_id(self) -> str:
        """The configured id, else the one persisted in the data dir (created once)."""
        if self.instance_id:
            return self.instance_id
        path = self.data_dir / "instance-id"
        if path.exists():
            return path.read_text().strip()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        new_id = f"instance-{uuid.uuid4().hex[:12]}"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(new_id + "\n")
        os.replace(tmp, path)
        return new_id
