"""A real ``initflow serve`` child process for browser tests, and a tiny API client.

Synchronisation is on real conditions with deadlines (``/readyz``, an API answer),
never on bare sleeps.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from e2e.processes import INITFLOW, child_environment, free_port, wait_until

STATUS_FIELDS = """
  projectId status progress error seq updatedAt
  steps { name title position status progress message attempts startedAt completedAt
          error { code message } nextAttemptAt }
"""


class Server:
    """``initflow serve`` on 127.0.0.1:port; restartable on the same port and data dir."""

    def __init__(
        self,
        data_dir: Path,
        log_dir: Path,
        env: Mapping[str, str],
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.env = dict(env)
        self.args = args
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Server:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"serve-{self.starts}.log"
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [INITFLOW, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args],
                env=child_environment(self.data_dir, self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._ready, timeout=timeout, what=f"initflow serve on {self.url} to be ready")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"initflow serve exited with {self.process.returncode}")
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace") for p in sorted(self.log_dir.glob("serve-*.log"))
        )


class Worker:
    """``initflow worker`` on a server's data dir: the runner alone, pausable with SIGSTOP."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        log = self.server.log_dir / "worker.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [INITFLOW, "worker"],
                env=child_environment(self.server.data_dir, self.server.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait(timeout=10)


class ApiClient:
    """GraphQL over HTTP with a bearer token, for arranging and checking what the page shows."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.token = token

    def request(self, query: str, variables: Mapping[str, Any] | None = None) -> Any:
        body = json.dumps({"query": query, "variables": dict(variables or {})}).encode()
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=body,
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.token}"},
        )
        with urllib.request.urlopen(request, timeout=15) as response:
            payload = json.load(response)
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def create_project(self, name: str, template: str = "static-site") -> str:
        data = self.request(
            "mutation($i: CreateProjectInput!) { createProject(input: $i) {"
            " project { id } userErrors { field message code } } }",
            {"i": {"name": name, "template": template}},
        )
        payload = data["createProject"]
        assert not payload["userErrors"], payload["userErrors"]
        return str(payload["project"]["id"])

    def status(self, project_id: str) -> dict[str, Any]:
        data = self.request(
            f"query($p: ID!) {{ projectStatus(projectId: $p) {{ {STATUS_FIELDS} }} }}",
            {"p": project_id},
        )
        return dict(data["projectStatus"])

    def projects_named(self, name: str) -> list[dict[str, Any]]:
        data = self.request("{ projects(first: 100) { edges { node { id name status } } } }")
        return [e["node"] for e in data["projects"]["edges"] if e["node"]["name"] == name]

    def wait_status(
        self, project_id: str, condition: Callable[[dict[str, Any]], bool], *, what: str
    ) -> dict[str, Any]:
        def check() -> dict[str, Any] | None:
            status = self.status(project_id)
            return status if condition(status) else None

        result: dict[str, Any] = wait_until(check, timeout=60, what=what)
        return result


def step_states(status: Mapping[str, Any]) -> dict[str, str]:
    return {s["name"]: s["status"] for s in status["steps"]}
