"""`initflow create` / `initflow watch` in a terminal (issue #5, item 4).

A real ``initflow serve`` child process; the client runs under a pseudo-terminal (its
controlling terminal, so Ctrl-C is a typed ``\\x03``) or on pipes. Every wait reads the
output until a pattern appears, with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.processes import INITFLOW, wait_until

from .conftest import Service, UserData, client_environment, start_service
from .terminal import PipedChild, PtyChild

pytestmark = pytest.mark.e2e

SPINNER = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]"
STEPS = (
    "Create project",
    "Render template",
    "Create environments",
    "Create repository",
    "Push template",
    "Configure GitOps",
    "Finalize",
)
RUN_DEADLINE = 60.0


def client_env(service: Service) -> dict[str, str]:
    return client_environment(
        service.process.data_dir,
        {"INITFLOW_URL": service.url, "INITFLOW_TOKEN": service.token, "TERM": "xterm-256color"},
    )


def completed(status: dict[str, Any]) -> set[str]:
    return {s["name"] for s in status["steps"] if s["status"] == "COMPLETED"}


def test_ctrl_c_detaches_the_run_continues_and_watch_reattaches_where_it_stands(
    service_logs: Service,
) -> None:
    service = service_logs
    env = client_env(service)
    create = PtyChild([INITFLOW, "create", "Detach Me", "--template", "python-service"], env)
    try:
        created = create.output.expect(r"project ([0-9a-f-]{36}) created", timeout=30)
        project_id = created.group(1)
        # The live view is up and a step is running (its spinner turns), two steps are done.
        create.output.expect(rf"✓ Render template.*\n.*{SPINNER} Create environments", timeout=30)
        assert "Step 3 of 7" in create.output.text
        create.ctrl_c()
        assert create.wait(timeout=15) == 130
        text = create.output.text
        assert (
            f"detached; initialization continues — re-attach with: initflow watch {project_id}"
            in text
        )
    finally:
        create.close()

    # Nothing was stopped: the run goes on without any client.
    at_detach = service.status(project_id)
    assert at_detach["status"] == "INITIALIZING"
    wait_until(
        lambda: completed(service.status(project_id)) - completed(at_detach),
        timeout=RUN_DEADLINE,
        what="a step to complete after the client detached",
    )

    before_watch = service.status(project_id)
    watch = PtyChild([INITFLOW, "watch", project_id], env)
    try:
        watch.output.expect(r"✓ project active", timeout=RUN_DEADLINE)
        assert watch.wait(timeout=15) == 0
        # Its first picture is where the run stood: every step completed by then has a check.
        first = next(frame for frame in watch.frames() if "Step " in frame)
        for title, step in zip(STEPS, before_watch["steps"], strict=True):
            if step["status"] == "COMPLETED":
                assert re.search(rf"✓ {title}\b", first), f"{title} not checked in:\n{first}"
        final = watch.frames()[-1]
        for title in STEPS:
            assert re.search(rf"✓ {title}\b", final), f"{title} not checked in:\n{final}"
        assert "100%  Step 7 of 7  active" in final
        assert "repository: git clone http" in watch.output.text
    finally:
        watch.close()
    assert service.status(project_id)["status"] == "ACTIVE"


def test_without_a_terminal_it_prints_plain_lines_and_exits_0(service_logs: Service) -> None:
    child = PipedChild(
        [INITFLOW, "create", "Plain Lines", "--template", "static-site"],
        client_env(service_logs),
    )
    try:
        assert child.wait(timeout=RUN_DEADLINE) == 0
    finally:
        child.close()
    out = child.stdout.raw
    assert "\x1b[" not in out  # no escape codes in a pipe
    lines = out.splitlines()
    assert re.fullmatch(r"project [0-9a-f-]{36} created", lines[0])
    assert re.match(r"\[  0%\] SNAPSHOT (queued|initializing), step 1 of 7$", lines[1])
    for title in STEPS:
        assert sum(1 for line in lines if f"STEP_COMPLETED ✓ {title}" in line) == 1, title
    assert "[100%] INITIALIZATION_COMPLETED ✓ project active" in lines
    assert lines[-2].startswith("repository: git clone http")


def test_a_failed_initialization_exits_1_with_the_error(service_logs: Service) -> None:
    child = PipedChild(
        [INITFLOW, "create", "Broken", "--template", "broken-site"], client_env(service_logs)
    )
    try:
        assert child.wait(timeout=RUN_DEADLINE) == 1
    finally:
        child.close()
    out = child.stdout.text
    assert re.search(r"STEP_FAILED ✗ Render template: \w+: .*undefined_var", out), out
    assert "INITIALIZATION_FAILED" in out
    assert "initialization failed: Render template failed" in child.stderr.text
    assert "retryInitialization" in child.stderr.text


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["watch", "00000000-0000-0000-0000-000000000000"], {}, "NOT_FOUND"),
        (["watch", "not-a-project"], {}, "NOT_FOUND"),
        (
            ["watch", "00000000-0000-0000-0000-000000000000"],
            {"INITFLOW_TOKEN": "ifl_bad"},
            "UNAUTHENTICATED",
        ),
        (["watch", "x"], {"INITFLOW_TOKEN": ""}, "no token"),
        (["create", "X", "--template", "nope"], {}, "template"),
        (["create", "X", "--template", "python-service", "--param", "oops"], {}, "KEY=VALUE"),
        (["watch", "x"], {"INITFLOW_URL": "http://127.0.0.1:9"}, "cannot reach"),
    ],
)
def test_usage_auth_and_not_found_errors_exit_2(
    service_logs: Service, args: list[str], env: dict[str, str], message: str
) -> None:
    child = PipedChild([INITFLOW, *args], {**client_env(service_logs), **env})
    try:
        assert child.wait(timeout=30) == 2
    finally:
        child.close()
    assert message in child.stderr.text, child.stderr.text
    assert "Traceback" not in child.stderr.text


def test_watch_rides_out_a_server_restart_resuming_after_the_last_event(
    tmp_path: Path, alice: UserData
) -> None:
    """SIGKILL the server half-way, restart it: the client reconnects with afterSeq and ends
    with exit 0, having shown every step's completion exactly once."""
    data_dir = alice.copy(tmp_path / "data")
    first = start_service(data_dir, tmp_path / "logs", "first")
    second = None
    env = client_environment(
        data_dir, {"INITFLOW_URL": first.base_url, "INITFLOW_TOKEN": alice.token}
    )
    child = PipedChild([INITFLOW, "create", "Restart Me", "--template", "python-service"], env)
    try:
        child.stdout.expect(r"STEP_COMPLETED ✓ Render template", timeout=RUN_DEADLINE)
        os.kill(first.pid, signal.SIGKILL)
        first.wait_exit(timeout=10)
        child.stderr.expect(r"connection lost .*; reconnecting in", timeout=30)
        second = start_service(data_dir, tmp_path / "logs", "second", port=first.port)
        child.stderr.expect(r"reconnected; resuming after event \d+", timeout=RUN_DEADLINE)
        assert child.wait(timeout=RUN_DEADLINE) == 0
        lines = child.stdout.raw.splitlines()
        for title in STEPS:
            assert sum(1 for line in lines if f"STEP_COMPLETED ✓ {title}" in line) == 1, title
        assert "[100%] INITIALIZATION_COMPLETED ✓ project active" in lines
    except BaseException:
        print(child.stdout.raw, child.stderr.raw, first.describe(), sep="\n")
        if second is not None:
            print(second.describe())
        raise
    finally:
        child.close()
        first.kill()
        if second is not None:
            second.kill()
