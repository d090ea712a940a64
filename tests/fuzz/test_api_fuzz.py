"""Fuzzing a running service: generated inputs and documents never cause an internal
error or a 500, and a rejected createProject writes nothing (issue #6)."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.processes import ServiceProcess, create_user

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "1500"))
CREATE = """mutation($input: CreateProjectInput!) {
  createProject(input: $input) { project { id name } userErrors { field message code } } }"""
COUNT = "{ projects { totalCount } }"

pytestmark = pytest.mark.fuzz


class Service:
    def __init__(self, process: ServiceProcess, token: str) -> None:
        self.url = f"{process.base_url}/graphql"
        self.token = token
        self.cases = 0
        self.examples = 0

    def post(self, body: Any) -> tuple[int, dict[str, Any] | None]:
        data = json.dumps(body).encode()
        request = urllib.request.Request(
            self.url,
            data=data,
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        self.cases += 1
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                return error.code, json.loads(payload)
            except json.JSONDecodeError:
                return error.code, None

    def count(self) -> int:
        _, body = self.post({"query": COUNT})
        assert body is not None
        return int(body["data"]["projects"]["totalCount"])


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Service]:
    data_dir = tmp_path_factory.mktemp("fuzz-data")
    token = create_user(data_dir, "fuzzer")
    process = ServiceProcess(
        data_dir=data_dir,
        log_dir=Path(tmp_path_factory.mktemp("fuzz-logs")),
        label="fuzz",
        env={"INITFLOW_RUNNER": "0", "INITFLOW_CREATE_BURST": "1000000"},
    )
    process.start()
    try:
        process.wait_ready()
        fuzz = Service(process, token)
        yield fuzz
        summary = f"fuzz: cases={fuzz.examples} requests={fuzz.cases}"
        request.config.fuzz_summary = [*getattr(request.config, "fuzz_summary", []), summary]  # type: ignore[attr-defined]
    finally:
        process.kill()


def assert_no_internal_error(status: int, body: dict[str, Any] | None, sent: object) -> None:
    """No 5xx, no masked error, and no trace of internals (unless the request itself said it:
    a syntax error quotes the offending name)."""
    assert status < 500, body
    text = json.dumps(body)
    assert "INTERNAL_SERVER_ERROR" not in text, text
    echoed = json.dumps(sent).lower()
    for marker in ("traceback", "sqlite"):
        assert marker not in text.lower() or marker in echoed, text


json_leaf = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=30)
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.one_of(
    st.text(max_size=120),
    st.sampled_from(
        ["", " ", "..", "a/b", "x" * 300, "nul\x00", "ok name", "Ünïcode näme", "../../etc/passwd"]
    ),
)
templates = st.one_of(st.sampled_from(["python-service", "static-site"]), st.text(max_size=20))
parameters = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["port", "description", "python_version", "tagline", "x"]),
        json_value,
        max_size=4,
    ),
    json_value,
)
environments = st.one_of(st.none(), st.lists(st.text(max_size=35), max_size=12))
keys = st.one_of(st.none(), st.text(max_size=210))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=names, template=templates, params=parameters, envs=environments, key=keys)
def test_create_project_never_fails_internally_and_rejections_write_nothing(  # noqa: PLR0917
    service: Service, name: str, template: str, params: Any, envs: list[str] | None, key: str | None
) -> None:
    project_input: dict[str, Any] = {"name": name, "template": template, "parameters": params}
    if envs is not None:
        project_input["environments"] = envs
    if key is not None:
        project_input["idempotencyKey"] = key
    service.examples += 1
    before = service.count()
    payload = {"query": CREATE, "variables": {"input": project_input}}
    status, body = service.post(payload)
    assert_no_internal_error(status, body, payload)
    assert body is not None
    payload = (body.get("data") or {}).get("createProject")
    if payload is None:
        assert body.get("errors"), body  # a variables/type error, reported as such
        assert service.count() == before
    elif payload["userErrors"]:
        assert payload["project"] is None
        assert all(e["code"] and e["message"] for e in payload["userErrors"])
        assert service.count() == before
    else:
        assert payload["project"]["id"]


FIELDS = [
    "viewer { id name }",
    "templates { name }",
    "projects(first: 3) { totalCount }",
    "__typename",
]
documents = st.one_of(
    st.text(max_size=200),
    st.lists(
        st.sampled_from(
            [
                *FIELDS,
                "{",
                "}",
                "(",
                ")",
                "$x",
                "...",
                "@skip",
                "query",
                "mutation",
                "subscription",
                "fragment f on Query",
            ]
        ),
        max_size=25,
    ).map(" ".join),
    st.builds(
        lambda f, n: "{ " + " ".join([f] * n) + " }", st.sampled_from(FIELDS), st.integers(1, 40)
    ),
    st.builds(
        lambda depth: "{ " + "projects { edges { node { " * depth + "id" + " } } }" * depth + " }",
        st.integers(1, 12),
    ),
)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    document=documents,
    variables=st.one_of(st.none(), st.dictionaries(st.text(max_size=5), json_value, max_size=2)),
)
def test_arbitrary_documents_never_cause_internal_errors(
    service: Service, document: str, variables: dict[str, Any] | None
) -> None:
    service.examples += 1
    payload = {"query": document, "variables": variables}
    status, body = service.post(payload)
    assert_no_internal_error(status, body, payload)
