"""`initflow create` and `initflow watch`: the seed's picture in a terminal.

Both are clients of the public API only (``--url``/``INITFLOW_URL``,
``--token``/``INITFLOW_TOKEN``). ``watch`` subscribes to ``initProgress``: the snapshot
first (exactly where the initialization stands), then every event. A dropped connection
(a server restart, a network blip) is retried with backoff and resumed with ``afterSeq``,
so no event is missed or shown twice. While the stream is quiet the status is re-read now
and then, so a step that stalls shows as stalled.

Ctrl-C detaches: nothing is stopped on the server; ``initflow watch ID`` re-attaches.

Exit codes: 0 the project is ACTIVE; 1 FAILED or CANCELED; 2 a usage, authentication or
not-found error, or no server at the URL; 130 detached with Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from initflow.client.api import ApiClient, ApiError, TransportError
from initflow.client.display import (
    LiveView,
    Status,
    WatchState,
    render_plain,
    symbols_for,
    wants_live,
)

EXIT_ACTIVE = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_DETACHED = 130
DEFAULT_URL = "http://127.0.0.1:8000"

STEP_FIELDS = """name title position status progress message attempts startedAt completedAt
  durationMs nextAttemptAt stalledSince error { code message }"""
STATUS_FIELDS = f"projectId status progress error seq steps {{ {STEP_FIELDS} }}"
WATCH = f"""
subscription Watch($id: ID!, $after: Int) {{
  initProgress(projectId: $id, afterSeq: $after) {{
    seq type at step {{ name }} status {{ {STATUS_FIELDS} }}
  }}
}}
"""
PROJECT = """
query Project($id: ID!) { project(id: $id) { id name slug template } }
"""
STATUS = f"""
query Status($id: ID!) {{ projectStatus(projectId: $id) {{ {STATUS_FIELDS} }} }}
"""
RESULT = """
query Result($id: ID!) {
  project(id: $id) { repository { cloneUrl defaultBranch } environments { name } }
}
"""
CREATE = """
mutation Create($input: CreateProjectInput!) {
  createProject(input: $input) {
    project { id name slug template }
    userErrors { field message code }
  }
}
"""
FRAME_SECONDS = 0.1
REFRESH_AFTER_SECONDS = 15.0
BACKOFF_FIRST_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 10.0
# A server error (a database failover, say) is retried like a dropped connection, this often
# in a row before the command gives up.
MAX_SERVER_ERRORS = 5


class UsageError(Exception):
    """Bad arguments or configuration: exit code 2."""


@dataclass
class Session:
    """What the Ctrl-C handler needs to say how to re-attach."""

    url_flag: str | None
    project_id: str | None = None


def backoff(failures: int) -> float:
    base = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2.0 ** max(0, failures - 1))
    return base * random.uniform(0.8, 1.2)  # jitter, not cryptography


def _client(args: argparse.Namespace) -> ApiClient:
    url = args.url or os.environ.get("INITFLOW_URL") or DEFAULT_URL
    token = args.token or os.environ.get("INITFLOW_TOKEN")
    if not token:
        raise UsageError("no token: pass --token or set INITFLOW_TOKEN")
    return ApiClient(url, token)


# --- presenters: the live block on a terminal, plain lines elsewhere ------------------------


class Presenter:
    """Plain output: one line per event on stdout, connection notices on stderr."""

    def __init__(self, state: WatchState) -> None:
        self.state = state
        self.symbols = symbols_for(sys.stdout)

    async def start(self) -> None:
        return None

    def event(self, event: dict[str, Any], status: Status) -> None:
        for line in render_plain(event, status, self.symbols):
            print(line, flush=True)

    def connected(self, resumed_after: int | None) -> None:
        if resumed_after is not None:
            print(f"reconnected; resuming after event {resumed_after}", file=sys.stderr)

    def reconnecting(self, reason: str, delay: float, attempt: int) -> None:
        print(
            f"connection lost ({reason}); reconnecting in {delay:.1f}s (attempt {attempt});"
            " the initialization continues on the server",
            file=sys.stderr,
            flush=True,
        )

    def refreshed(self, before: Status, after: Status) -> None:
        was = {s.name for s in before.steps if s.stalled_since}
        for step in after.steps:
            if step.stalled_since is not None and step.name not in was:
                print(
                    f"[{after.progress:3d}%] stalled: {step.title} has reported no progress"
                    f" (stalled since {step.stalled_since:%H:%M:%S} UTC)",
                    flush=True,
                )

    async def close(self) -> None:
        return None


class LivePresenter(Presenter):
    """The block redrawn in place, ten frames a second (the spinner and timers move)."""

    def __init__(self, state: WatchState) -> None:
        super().__init__(state)
        self.view = LiveView(
            stream=sys.stdout, color=not os.environ.get("NO_COLOR"), symbols=self.symbols
        )
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.view.start()
        self.view.draw(self.state)
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(FRAME_SECONDS)
            self.view.draw(self.state)

    def event(self, event: dict[str, Any], status: Status) -> None:
        self.view.draw(self.state)

    def connected(self, resumed_after: int | None) -> None:
        self.view.draw(self.state)

    def reconnecting(self, reason: str, delay: float, attempt: int) -> None:
        self.view.draw(self.state)

    def refreshed(self, before: Status, after: Status) -> None:
        self.view.draw(self.state)

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.view.draw(self.state, final=True)
        self.view.stop()


def presenter_for(state: WatchState, plain: bool) -> Presenter:
    if not plain and wants_live(sys.stdout):
        return LivePresenter(state)
    return Presenter(state)


# --- following one initialization -----------------------------------------------------------


async def _status(client: ApiClient, project_id: str) -> Status:
    data = await client.execute(STATUS, {"id": project_id})
    return Status.from_json(data["projectStatus"])


async def _project(client: ApiClient, project_id: str) -> dict[str, Any]:
    """The project's name etc.; ``ApiError`` NOT_FOUND if it is missing or not yours."""
    data = await client.execute(PROJECT, {"id": project_id})
    project: dict[str, Any] | None = data.get("project")
    if project is None:
        raise ApiError.of("NOT_FOUND", f"project {project_id} not found")
    return project


async def _refresh_while_quiet(client: ApiClient, state: WatchState, presenter: Presenter) -> None:
    """Re-read the status when no event came for a while (stalled steps produce none)."""
    while True:
        await asyncio.sleep(1.0)
        current = state.status
        quiet = time.monotonic() - state.received_at
        if current is None or current.finished or state.connection != "live":
            continue
        if quiet < REFRESH_AFTER_SECONDS:
            continue
        try:
            fresh = await _status(client, state.project_id)
        except (ApiError, TransportError):
            state.received_at = time.monotonic()  # try again after another quiet spell
            continue
        if fresh.seq == current.seq and state.status is current:
            state.apply(fresh)
            presenter.refreshed(current, fresh)
        else:
            state.received_at = time.monotonic()


async def follow(client: ApiClient, state: WatchState, presenter: Presenter) -> Status:
    """Render every event until the initialization ends; survive dropped connections."""
    after: int | None = None
    failures = 0

    def on_connected() -> None:
        resumed = after if state.connection == "reconnecting" else None
        state.connection = "live"
        state.reconnect_reason = None
        presenter.connected(resumed)

    while True:
        try:
            async for data in client.subscribe(
                WATCH, {"id": state.project_id, "after": after}, on_connected=on_connected
            ):
                event = data["initProgress"]
                seq = int(event["seq"])
                if after is not None and seq <= after:
                    continue  # already shown (never render an older state over a newer one)
                status = Status.from_json(event["status"])
                state.apply(status)
                after = seq
                failures = 0
                presenter.event(event, status)
            if state.status is not None and state.status.finished:
                return state.status
            raise TransportError("the stream ended before the initialization did")
        except TransportError as exc:
            reason = str(exc)
        except ApiError as exc:
            if exc.code == "FORBIDDEN":
                # 4403 is also "too many connections": ask over HTTP whether the token is
                # bad or the project gone (those end the command); else try again later.
                with contextlib.suppress(TransportError):
                    await _project(client, state.project_id)
            elif exc.code != "INTERNAL_SERVER_ERROR" or failures >= MAX_SERVER_ERRORS:
                raise
            reason = f"{exc} ({exc.code})"
        failures += 1
        delay = backoff(failures)
        state.connection = "reconnecting"
        state.reconnect_reason = reason
        state.reconnect_attempt = failures
        state.reconnect_at = time.monotonic() + delay
        presenter.reconnecting(reason, delay, failures)
        await asyncio.sleep(delay)


async def watch_project(
    client: ApiClient,
    project_id: str,
    *,
    plain: bool,
    project: dict[str, Any] | None = None,
) -> int:
    """Attach to one project's initialization; the exit code of its outcome."""
    if project is None:
        project = await _project(client, project_id)
    state = WatchState(
        project_id=project_id,
        name=project.get("name"),
        template=project.get("template"),
        url=client.url,
    )
    presenter = presenter_for(state, plain)
    refresher: asyncio.Task[None] | None = None
    ending = "stopped"  # an error ends the view; it is printed below the block
    try:
        await presenter.start()
        refresher = asyncio.create_task(_refresh_while_quiet(client, state, presenter))
        final = await follow(client, state, presenter)
        ending = "finished"
    except asyncio.CancelledError:  # Ctrl-C
        ending = "detached"
        raise
    finally:
        if refresher is not None:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
        state.connection = ending
        await presenter.close()
    await _summary(client, final, project_id)
    return EXIT_ACTIVE if final.status == "ACTIVE" else EXIT_FAILED


async def _summary(client: ApiClient, final: Status, project_id: str) -> None:
    if final.status == "ACTIVE":
        try:
            data = await client.execute(RESULT, {"id": project_id})
        except (ApiError, TransportError):
            return
        project = data.get("project") or {}
        repository = project.get("repository")
        if repository:
            print(f"repository: git clone {repository['cloneUrl']}", flush=True)
        environments = [e["name"] for e in project.get("environments") or []]
        if environments:
            print(f"environments: {', '.join(environments)}", flush=True)
        return
    outcome = "failed" if final.status == "FAILED" else "was canceled"
    detail = f": {final.error}" if final.error else ""
    print(f"initialization {outcome}{detail}", file=sys.stderr)
    print(
        "Completed steps are kept; retry from where it stopped in the dashboard"
        f" ({client.url}/projects/{project_id}) or with the retryInitialization mutation.",
        file=sys.stderr,
    )


# --- the commands -----------------------------------------------------------------------------


def _run(session: Session, main: Callable[[], Any]) -> int:
    """Run one command's coroutine; map errors and Ctrl-C to exit codes."""
    try:
        code: int = asyncio.run(main())
        return code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ApiError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
        return EXIT_USAGE
    except TransportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if session.project_id is None:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_DETACHED
        url = f" --url {session.url_flag}" if session.url_flag else ""
        print(
            "\ndetached; initialization continues — re-attach with:"
            f" initflow watch {session.project_id}{url}",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_DETACHED


def cmd_watch(args: argparse.Namespace) -> int:
    session = Session(url_flag=args.url, project_id=args.project_id)

    async def main() -> int:
        return await watch_project(_client(args), args.project_id, plain=args.plain)

    return _run(session, main)


def _parameters(pairs: list[str]) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            parameters[key] = json.loads(raw)
        except json.JSONDecodeError:
            parameters[key] = raw
    return parameters


def cmd_create(args: argparse.Namespace) -> int:
    session = Session(url_flag=args.url)

    async def main() -> int:
        client = _client(args)
        project_input: dict[str, Any] = {
            "name": args.name,
            "template": args.template,
            "parameters": _parameters(args.param),
        }
        if args.env is not None:
            project_input["environments"] = args.env
        if args.idempotency_key:
            project_input["idempotencyKey"] = args.idempotency_key
        data = await client.execute(CREATE, {"input": project_input})
        payload = data["createProject"]
        for error in payload["userErrors"]:
            field = ".".join(error["field"] or [])
            where = f"{field}: " if field else ""
            print(f"error: {where}{error['message']} ({error['code']})", file=sys.stderr)
        project = payload["project"]
        if project is None:
            return EXIT_USAGE
        session.project_id = project["id"]
        print(f"project {project['id']} created", flush=True)
        if args.no_watch:
            return EXIT_ACTIVE
        return await watch_project(client, project["id"], plain=args.plain, project=project)

    return _run(session, main)


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"service URL (INITFLOW_URL, default {DEFAULT_URL})")
    parser.add_argument("--token", help="API token (INITFLOW_TOKEN)")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="one line per event even on a terminal (the default when not a terminal)",
    )


EXIT_CODES = (
    "exit codes: 0 the project is active; 1 it failed or was canceled; 2 usage,"
    " authentication or not-found error, or no server at the URL; 130 detached (Ctrl-C)"
)


def add_client_commands(commands: Any) -> None:
    create_parser = commands.add_parser(
        "create",
        help="create a project and watch it come up",
        description="Create a project, then show its initialization live (see `watch`).",
        epilog=EXIT_CODES,
    )
    create_parser.add_argument("name")
    create_parser.add_argument("--template", required=True)
    create_parser.add_argument(
        "--param", action="append", default=[], metavar="K=V", help="repeatable; V may be JSON"
    )
    create_parser.add_argument("--env", action="append", metavar="NAME", help="repeatable")
    create_parser.add_argument(
        "--idempotency-key", help="the same key returns the same project (a safe retry)"
    )
    create_parser.add_argument("--no-watch", action="store_true", help="print the id and exit")
    _client_options(create_parser)
    create_parser.set_defaults(func=cmd_create)

    watch_parser = commands.add_parser(
        "watch",
        help="attach to a project's initialization",
        description=(
            "Show where a project's initialization stands and follow it live until it ends."
            " Ctrl-C detaches; the initialization continues on the server."
        ),
        epilog=EXIT_CODES,
    )
    watch_parser.add_argument("project_id")
    _client_options(watch_parser)
    watch_parser.set_defaults(func=cmd_watch)
