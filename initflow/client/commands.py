"""`initflow create` and `initflow watch`: the seed's picture in a terminal.

Ctrl-C detaches; the initialization keeps going on the server. ``watch``
re-attaches and shows exactly where it stands. Exit code 0 on ACTIVE, 1 on
FAILED or CANCELED.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

from initflow.client.api import ApiClient, ApiError

STATUS_FIELDS = """
  projectId status progress error seq
  steps { name title status progress message durationMs error { code message } }
"""
WATCH = f"""
subscription Watch($id: ID!, $after: Int) {{
  initProgress(projectId: $id, afterSeq: $after) {{
    seq type step {{ name }} status {{ {STATUS_FIELDS} }}
  }}
}}
"""
CREATE = """
mutation Create($input: CreateProjectInput!) {
  createProject(input: $input) {
    project { id name slug }
    userErrors { field message code }
  }
}
"""
ICONS = {"COMPLETED": "✓", "RUNNING": "…", "PENDING": "·", "FAILED": "✗", "SKIPPED": "-"}


def _client(args: argparse.Namespace) -> ApiClient:
    url = args.url or os.environ.get("INITFLOW_URL") or "http://127.0.0.1:8000"
    token = args.token or os.environ.get("INITFLOW_TOKEN")
    if not token:
        raise SystemExit("error: no token: pass --token or set INITFLOW_TOKEN")
    return ApiClient(url, token)


def _line(event: dict[str, Any]) -> str:
    status = event["status"]
    step = next(
        (s for s in status["steps"] if s["name"] == (event["step"] or {}).get("name")), None
    )
    detail = ""
    if step is not None:
        icon = ICONS.get(step["status"], "?")
        detail = f" {icon} {step['title']}: {step['message'] or step['status'].lower()}"
    return f"[{status['progress']:3d}%] {event['type']}{detail}"


def _exit_code(status: str) -> int:
    return 0 if status == "ACTIVE" else 1


async def watch(client: ApiClient, project_id: str) -> int:
    """Print each event until the terminal one; re-attaches after a dropped connection."""
    after: int | None = None
    final = "INITIALIZING"
    while True:
        try:
            async for data in client.subscribe(WATCH, {"id": project_id, "after": after}):
                event = data["initProgress"]
                print(_line(event), flush=True)
                if event["type"] == "SNAPSHOT":
                    for step in event["status"]["steps"]:
                        print(
                            f"       {ICONS.get(step['status'], '?')} {step['title']}", flush=True
                        )
                after = event["seq"]
                final = event["status"]["status"]
            break
        except (ConnectionError, OSError):
            print("connection lost; reconnecting…", file=sys.stderr, flush=True)
            await asyncio.sleep(1)
    if final != "ACTIVE":
        print(f"initialization ended {final.lower()}", file=sys.stderr)
    return _exit_code(final)


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(watch(_client(args), args.project_id))
    except ApiError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndetached; initialization continues on the server", file=sys.stderr)
        return 130


def _parameters(pairs: list[str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep:
            raise SystemExit(f"error: --param expects k=v, got {pair!r}")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


async def create(args: argparse.Namespace) -> int:
    client = _client(args)
    project_input: dict[str, Any] = {
        "name": args.name,
        "template": args.template,
        "parameters": _parameters(args.param),
    }
    if args.env is not None:
        project_input["environments"] = args.env
    data = await client.execute(CREATE, {"input": project_input})
    payload = data["createProject"]
    for error in payload["userErrors"]:
        field = ".".join(error["field"] or [])
        print(f"error: {field}: {error['message']} ({error['code']})", file=sys.stderr)
    if payload["project"] is None:
        return 2
    project_id = payload["project"]["id"]
    print(f"project {project_id} created", flush=True)
    if args.no_watch:
        return 0
    return await watch(client, project_id)


def cmd_create(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(create(args))
    except ApiError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndetached; initialization continues on the server", file=sys.stderr)
        return 130


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="service URL (INITFLOW_URL, default http://127.0.0.1:8000)")
    parser.add_argument("--token", help="API token (INITFLOW_TOKEN)")


def add_client_commands(commands: Any) -> None:
    create_parser = commands.add_parser("create", help="create a project and watch it come up")
    create_parser.add_argument("name")
    create_parser.add_argument("--template", required=True)
    create_parser.add_argument("--param", action="append", default=[], metavar="K=V")
    create_parser.add_argument("--env", action="append", metavar="NAME", help="repeatable")
    create_parser.add_argument("--no-watch", action="store_true")
    _client_options(create_parser)
    create_parser.set_defaults(func=cmd_create)

    watch_parser = commands.add_parser("watch", help="attach to a project's initialization")
    watch_parser.add_argument("project_id")
    _client_options(watch_parser)
    watch_parser.set_defaults(func=cmd_watch)
