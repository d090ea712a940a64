"""Fixtures for the terminal client and the playground: real ``initflow`` processes.

``graphiql_assets`` runs ``initflow graphiql fetch`` once per session against the real npm
registry (seven small files). ``service`` is one ``initflow serve`` per module with user
``alice``, steps slowed down so a run can be watched half-way, and a ``broken-site``
template whose render step fails for good.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import INITFLOW, ServiceProcess, child_environment, create_user

STEP_DELAY_SECONDS = "0.5"
BROKEN_TEMPLATE = {
    "template.toml": 'title = "Broken site"\ndescription = "Refers to an undefined variable."\n',
    "files/README.md.j2": "# {{ project_name }}\n\n{{ undefined_var }}\n",
}


def client_environment(data_dir: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A child's environment without the developer's INITFLOW_* settings."""
    env = child_environment(data_dir, extra)
    for name in ("INITFLOW_GRAPHQL_IDE", "NO_COLOR", "INITFLOW_URL", "INITFLOW_TOKEN"):
        if extra is None or name not in extra:
            env.pop(name, None)
    env["PYTHONIOENCODING"] = "utf-8"
    return env


@pytest.fixture(scope="session")
def graphiql_assets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The playground's assets, fetched for real by ``initflow graphiql fetch``."""
    data_dir = tmp_path_factory.mktemp("graphiql-fetch") / "data"
    result = subprocess.run(
        [INITFLOW, "graphiql", "fetch"],
        env=client_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"fetch failed:\n{result.stdout}\n{result.stderr}"
    return data_dir / "graphiql"


@dataclass(frozen=True)
class Service:
    process: ServiceProcess
    token: str

    @property
    def url(self) -> str:
        return self.process.base_url

    def graphql(self, query: str, **variables: Any) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables}).encode(),
            headers={
                "Content-Type": "application/json",
                "Authorization": f"Bearer {self.token}",
            },
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body: dict[str, Any] = json.loads(response.read())
        assert not body.get("errors"), body["errors"]
        data: dict[str, Any] = body["data"]
        return data

    def status(self, project_id: str) -> dict[str, Any]:
        query = """query($id: ID!) { projectStatus(projectId: $id) {
            status progress seq steps { name status } } }"""
        status: dict[str, Any] = self.graphql(query, id=project_id)["projectStatus"]
        return status


def start_service(
    data_dir: Path, log_dir: Path, label: str, port: int | None = None
) -> ServiceProcess:
    templates = data_dir.parent / "templates"
    for name, text in BROKEN_TEMPLATE.items():
        path = templates / "broken-site" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    service = ServiceProcess(
        data_dir=data_dir,
        log_dir=log_dir,
        label=label,
        port=port,
        env={
            "INITFLOW_STEP_DELAY_SECONDS": STEP_DELAY_SECONDS,
            "INITFLOW_TEMPLATE_DIRS": str(templates),
        },
    )
    service.start()
    service.wait_ready()
    return service


@dataclass(frozen=True)
class UserData:
    """A data dir whose database holds user ``alice`` (made by ``initflow users create``)."""

    path: Path
    token: str

    def copy(self, target: Path) -> Path:
        shutil.copytree(self.path, target)
        return target


@pytest.fixture(scope="session")
def alice(tmp_path_factory: pytest.TempPathFactory) -> UserData:
    """Made once per session; each service runs on its own copy."""
    data_dir = tmp_path_factory.mktemp("alice") / "data"
    return UserData(data_dir, create_user(data_dir, "alice"))


@pytest.fixture(scope="module")
def service(alice: UserData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("client")
    process = start_service(alice.copy(root / "data"), root / "logs", "serve")
    try:
        yield Service(process, alice.token)
    finally:
        process.kill()


@pytest.fixture
def service_logs(service: Service, request: pytest.FixtureRequest) -> Iterator[Service]:
    """``service``, with its logs printed when the test fails."""
    yield service
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        print(service.process.describe())


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report
