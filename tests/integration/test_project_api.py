"""createProject, project queries, idempotency, ownership and bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from initflow.models import InitializationStep, Project
from tests.conftest import CREATE_PROJECT, PROJECT_STATUS, Api


async def test_create_project_reaches_active_with_repository_and_environments(api_for: Any) -> None:
    api: Api = await api_for()
    project_id = await api.create_project("Shop API", parameters={"port": 9000})
    async with api.subscribe(project_id) as stream:
        await stream.events_until_complete()
    data = await api.data(
        """query($id: ID!) { project(id: $id) {
            name slug template status initialization { status progress }
            environments { name } repository { cloneUrl defaultBranch headCommit } } }""",
        id=project_id,
    )
    project = data["project"]
    assert project["slug"] == "shop-api"
    assert project["status"] == "ACTIVE"
    assert project["initialization"] == {"status": "ACTIVE", "progress": 100}
    assert [e["name"] for e in project["environments"]] == ["development", "staging", "production"]
    assert project["repository"]["cloneUrl"].endswith(f"/git/{project_id}.git")
    assert len(project["repository"]["headCommit"]) == 40


async def test_ten_concurrent_creates_with_one_idempotency_key_make_one_project(
    api_for: Any,
) -> None:
    api: Api = await api_for()
    results = await asyncio.gather(
        *(
            api.data(
                CREATE_PROJECT,
                input={"name": "Twin", "template": "static-site", "idempotencyKey": "k-1"},
            )
            for _ in range(10)
        )
    )
    ids = {r["createProject"]["project"]["id"] for r in results}
    assert len(ids) == 1
    assert all(r["createProject"]["userErrors"] == [] for r in results)
    assert await Project.all().count() == 1
    assert await InitializationStep.all().count() == 7


async def test_projects_are_listed_newest_first_with_cursor_pagination(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    for index in range(5):
        await api.create_project(f"Listed {index}")
    query = """query($after: String) { projects(first: 2, after: $after) {
        totalCount pageInfo { hasNextPage endCursor } edges { node { name } } } }"""
    names: list[str] = []
    after = None
    while True:
        page = (await api.data(query, after=after))["projects"]
        assert page["totalCount"] == 5
        names += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert names == [f"Listed {i}" for i in reversed(range(5))]
    too_many = await api.query("{ projects(first: 1000) { totalCount } }")
    assert too_many["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_templates_list_their_declared_parameters(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    data = await api.data("{ templates { name title parameters { name type required default } } }")
    by_name = {t["name"]: t for t in data["templates"]}
    assert {"python-service", "static-site"} <= set(by_name)
    port = next(p for p in by_name["python-service"]["parameters"] if p["name"] == "port")
    assert port["type"] == "integer" and port["default"] == 8080


async def test_another_users_project_is_not_found_like_a_missing_one(api_for: Any) -> None:
    alice: Api = await api_for("alice", run_runner=False)
    bob: Api = await api_for("bob")
    project_id = await alice.create_project("Private")

    theirs = await bob.query(PROJECT_STATUS, id=project_id)
    missing = await bob.query(PROJECT_STATUS, id=str(uuid.uuid4()))
    garbage = await bob.query(PROJECT_STATUS, id="not-an-id")
    for body in (theirs, missing, garbage):
        assert body["data"] is None
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        assert body["errors"][0]["message"] == theirs["errors"][0]["message"]
    assert (await bob.data("query($id: ID!) { project(id: $id) { id } }", id=project_id)) == {
        "project": None
    }
    assert (await bob.data("{ projects { totalCount } }"))["projects"]["totalCount"] == 0

    async with bob.subscribe(project_id) as stream:
        assert await stream.next_event() is None
    assert stream.errors is not None
    assert stream.errors[0]["extensions"]["code"] == "NOT_FOUND"
    assert stream.errors[0]["message"] == theirs["errors"][0]["message"]


async def test_requests_without_a_valid_token_are_refused(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    anonymous = await api.client.post("/graphql", json={"query": "{ viewer { name } }"})
    body = await anonymous.json()
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    forged = await api.client.post(
        "/graphql",
        json={"query": "{ viewer { name } }"},
        headers={"Authorization": "Bearer ifl_not-a-real-token"},
    )
    assert (await forged.json())["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

    for payload in ({}, {"authorization": "Bearer ifl_not-a-real-token"}):
        ws = await api.client.ws_connect("/graphql", protocols=("graphql-transport-ws",))
        await ws.send_json({"type": "connection_init", "payload": payload})
        message = await ws.receive(timeout=10)
        assert message.type.name == "CLOSE"
        assert ws.close_code == 4403
        await ws.close()
    assert (await api.data("{ viewer { name } }"))["viewer"]["name"] == "alice"


async def test_legacy_graphql_ws_protocol_streams_progress(api_for: Any) -> None:
    api: Api = await api_for()
    project_id = await api.create_project("Legacy Client")
    ws = await api.client.ws_connect("/graphql", protocols=("graphql-ws",))
    await ws.send_json(
        {"type": "connection_init", "payload": {"authorization": f"Bearer {api.token}"}}
    )
    assert (await ws.receive_json(timeout=10))["type"] == "connection_ack"
    query = "subscription($id: ID!) { initProgress(projectId: $id) { seq type } }"
    await ws.send_json(
        {"id": "1", "type": "start", "payload": {"query": query, "variables": {"id": project_id}}}
    )
    types = []
    while True:
        frame = await ws.receive_json(timeout=30)
        if frame["type"] == "data":
            types.append(frame["payload"]["data"]["initProgress"]["type"])
        elif frame["type"] == "complete":
            break
    await ws.close()
    assert types[0] == "SNAPSHOT"
    assert types[-1] == "INITIALIZATION_COMPLETED" or types == ["SNAPSHOT"]


BAD_NAMES = [
    ("", "REQUIRED"),
    ("   ", "REQUIRED"),
    ("x" * 300, "TOO_LONG"),
    ("a/b", "INVALID_CHARACTERS"),
    ("../../etc", "INVALID_CHARACTERS"),
    ("..", "INVALID_CHARACTERS"),
    ("nul\x00byte", "INVALID_CHARACTERS"),
    ("bell\x07", "INVALID_CHARACTERS"),
    ("line\nbreak", "INVALID_CHARACTERS"),
    ("!!!", "INVALID_NAME"),
]


def _files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if "-wal" not in p.name and "-shm" not in p.name}


@pytest.mark.parametrize(("name", "code"), BAD_NAMES)
async def test_bad_project_names_are_rejected_and_write_nothing(
    api_for: Any, tmp_path: Path, name: str, code: str
) -> None:
    api: Api = await api_for()
    before = _files_under(tmp_path)
    data = await api.data(CREATE_PROJECT, input={"name": name, "template": "python-service"})
    payload = data["createProject"]
    assert payload["project"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [(["name"], code)]
    assert await Project.all().count() == 0
    assert _files_under(tmp_path) - before <= {
        p for p in _files_under(tmp_path) if p.suffix == ".sqlite3"
    }


@pytest.mark.parametrize(
    ("project_input", "expected"),
    [
        ({"template": "no-such-template"}, [(["template"], "UNKNOWN_TEMPLATE")]),
        ({"parameters": {"colour": "red"}}, [(["parameters", "colour"], "UNKNOWN_PARAMETER")]),
        ({"parameters": {"port": "eighty"}}, [(["parameters", "port"], "INVALID_TYPE")]),
        ({"parameters": [1, 2]}, [(["parameters"], "INVALID_TYPE")]),
        ({"environments": ["Prod!"]}, [(["environments", "0"], "INVALID_ENVIRONMENT")]),
        ({"environments": ["dev", "dev"]}, [(["environments", "1"], "DUPLICATE")]),
        (
            {"name": "", "template": "nope"},
            [(["name"], "REQUIRED"), (["template"], "UNKNOWN_TEMPLATE")],
        ),
    ],
)
async def test_bad_create_inputs_return_user_errors_and_write_nothing(
    api_for: Any, project_input: dict[str, Any], expected: list[tuple[list[str], str]]
) -> None:
    api: Api = await api_for()
    full = {"name": "Valid Name", "template": "python-service", **project_input}
    payload = (await api.data(CREATE_PROJECT, input=full))["createProject"]
    assert payload["project"] is None
    assert sorted((e["field"], e["code"]) for e in payload["userErrors"]) == sorted(expected)
    assert all(e["message"] for e in payload["userErrors"])
    assert await Project.all().count() == 0


async def test_duplicate_name_for_the_same_owner_is_a_user_error(api_for: Any) -> None:
    alice: Api = await api_for("alice", run_runner=False)
    bob: Api = await api_for("bob")
    await alice.create_project("Same Name")
    again = await alice.data(CREATE_PROJECT, input={"name": "same name", "template": "static-site"})
    assert [(e["field"], e["code"]) for e in again["createProject"]["userErrors"]] == [
        (["name"], "NAME_TAKEN")
    ]
    # Another owner may use the name.
    await bob.create_project("Same Name")
    assert await Project.all().count() == 2


async def test_internal_errors_are_masked_but_validation_errors_stay_readable(api_for: Any) -> None:
    api: Api = await api_for(run_runner=False)
    body = await api.query("{ viewer { nope } }")
    assert "nope" in body["errors"][0]["message"]
    assert "Traceback" not in json.dumps(body)
