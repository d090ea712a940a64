"""The terminal picture as a pure function of what the server sent (no terminal needed)."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from initflow.client.display import (
    ASCII,
    UNICODE,
    LiveView,
    Status,
    WatchState,
    cell_width,
    fit,
    format_duration,
    plain_text,
    render_live,
    render_plain,
)

from .terminal import strip_ansi

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
TITLES = {
    "create_project": "Create project",
    "render_template": "Render template",
    "create_environments": "Create environments",
    "create_repository": "Create repository",
}


def step(name: str, status: str, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": name,
        "title": TITLES[name],
        "position": list(TITLES).index(name) + 1,
        "status": status,
        "progress": 0,
        "message": None,
        "attempts": 0,
        "startedAt": None,
        "completedAt": None,
        "durationMs": None,
        "nextAttemptAt": None,
        "stalledSince": None,
        "error": None,
    }
    base.update(fields)
    return base


def status(state: str, progress: int, steps: list[dict[str, Any]], **fields: Any) -> Status:
    data = {"projectId": "p-1", "status": state, "progress": progress, "seq": 9, "steps": steps}
    data.update(fields)
    return Status.from_json(data)


def done(name: str, seconds: float, message: str = "done") -> dict[str, Any]:
    return step(
        name,
        "COMPLETED",
        progress=100,
        message=message,
        attempts=1,
        startedAt=T0.isoformat(),
        completedAt=(T0 + timedelta(seconds=seconds)).isoformat(),
        durationMs=int(seconds * 1000),
    )


def running(name: str, elapsed_ms: int, **fields: Any) -> dict[str, Any]:
    started = datetime.now(UTC) - timedelta(milliseconds=elapsed_ms)
    return step(
        name,
        "RUNNING",
        **{"attempts": 1, "startedAt": started.isoformat(), "durationMs": elapsed_ms, **fields},
    )


def lines(state: WatchState, frame: int | None = 0, now: float = 100.0) -> list[str]:
    return [plain_text(line) for line in render_live(state, frame=frame, symbols=UNICODE, now=now)]


def watch(current: Status, received_at: float = 100.0, **fields: Any) -> WatchState:
    state = WatchState(project_id="p-1", name="Shop API", template="python-service", **fields)
    state.apply(current, now=received_at)
    state.connection = fields.get("connection", "live")
    return state


def test_half_way_shows_checks_a_spinner_pending_dots_percent_and_step_k_of_n() -> None:
    current = status(
        "INITIALIZING",
        35,
        [
            done("create_project", 0.9, "Project recorded"),
            done("render_template", 1.25, "Rendered 11 files"),
            running("create_environments", 400, progress=40, message="environment staging ready"),
            step("create_repository", "PENDING"),
        ],
    )
    out = lines(watch(current), frame=0)
    assert out[0] == "Shop API  python-service  p-1"
    assert out[1].startswith("█" * 10 + "░" * 20)
    assert "35%  Step 3 of 4: Create environments  initializing" in out[1]
    assert out[2].split() == ["✓", "Create", "project", "0.9s", "Project", "recorded"]
    assert out[3].startswith("  ✓ Render template") and "1.2s" in out[3]
    assert out[4].startswith("  ⠋ Create environments")
    assert "40%  environment staging ready" in out[4]
    assert out[5].rstrip() == "  · Create repository"
    assert "Ctrl-C detaches" in out[-1]


def test_a_running_steps_timer_ticks_from_the_servers_duration_not_the_local_clock() -> None:
    current = status("INITIALIZING", 10, [running("create_project", 2_000)])
    state = watch(current, received_at=50.0)
    assert "2.0s" in lines(state, now=50.0)[2]
    assert "5.5s" in lines(state, now=53.5)[2]
    assert lines(state, frame=1)[2][2] != lines(state, frame=2)[2][2]  # the spinner turns


def test_a_failed_step_shows_its_code_and_message_and_the_outcome() -> None:
    failed = step(
        "render_template",
        "FAILED",
        attempts=1,
        error={"code": "TEMPLATE_RENDER_FAILED", "message": "'undefined_var' is undefined"},
    )
    current = status(
        "FAILED",
        5,
        [done("create_project", 0.5), failed, step("create_environments", "PENDING")],
        error="Render template failed: 'undefined_var' is undefined",
    )
    out = lines(watch(current, connection="finished"))
    assert "Step 2 of 3: Render template  failed" in out[1]
    assert out[3].startswith("  ✗ Render template")
    assert "failed: TEMPLATE_RENDER_FAILED: 'undefined_var' is undefined" in out[3]
    assert (
        out[-1] == "✗ initialization failed: Render template failed: 'undefined_var' is undefined"
    )


def test_skipped_stalled_and_retrying_steps_say_so() -> None:
    now = datetime.now(UTC)
    current = status(
        "INITIALIZING",
        50,
        [
            step("create_project", "SKIPPED", message="no cluster configured"),
            running(
                "render_template",
                90_000,
                progress=20,
                message="files 2/11",
                stalledSince=(now - timedelta(seconds=30)).isoformat(),
            ),
            running(
                "create_environments",
                3_000,
                attempts=2,
                nextAttemptAt=(now + timedelta(seconds=4)).isoformat(),
                error={"code": "STORE_DOWN", "message": "template store unreachable"},
            ),
            step("create_repository", "PENDING"),
        ],
    )
    out = lines(watch(current))
    assert out[2].startswith("  - Create project") and "skipped: no cluster configured" in out[2]
    assert "stalled 30s: no progress reported  (20%  files 2/11)" in out[3]
    assert out[4].startswith("  ↻ Create environments")
    assert "attempt 2 failed (STORE_DOWN: template store unreachable); retrying in" in out[4]


def test_finished_reconnecting_and_detached_footers() -> None:
    active = status("ACTIVE", 100, [done("create_project", 1.0), done("render_template", 2.0)])
    out = lines(watch(active, connection="finished"), frame=None)
    assert "100%  Step 2 of 2  active" in out[1]
    assert out[1].startswith("█" * 30)
    assert out[-1] == "✓ project active  in 2.0s"

    half = status("INITIALIZING", 30, [running("create_project", 100)])
    state = watch(half)
    state.connection = "reconnecting"
    state.reconnect_attempt = 3
    state.reconnect_at = 102.0
    state.reconnect_reason = "cannot reach http://x: Connection refused"
    footer = lines(state, now=100.0)[-1]
    assert footer.startswith("connection lost; reconnecting in 2s (attempt 3)")
    assert "continues on the server" in footer
    # A dropped connection is not a failure: nothing turns red.
    colours = {style for line in render_live(state, frame=0, symbols=UNICODE) for _, style in line}
    assert "red" not in colours
    state.connection = "detached"
    assert lines(state)[-1] == "detached; the initialization continues on the server"


def test_a_run_no_runner_picked_up_yet_is_queued_not_running() -> None:
    current = status(
        "INITIALIZING", 0, [step("create_project", "PENDING"), step("render_template", "PENDING")]
    )
    out = lines(watch(current))
    assert "0%  Step 1 of 2: Create project  queued: waiting for a runner" in out[1]
    assert all(line.startswith("  · ") for line in out[2:4])


def test_plain_lines_one_per_event() -> None:
    current = status(
        "INITIALIZING",
        25,
        [done("create_project", 0.5, "Project 'x' recorded"), running("render_template", 10)],
    )
    event = {"type": "STEP_COMPLETED", "seq": 4, "step": {"name": "create_project"}}
    assert render_plain(event, current, UNICODE) == [
        "[ 25%] STEP_COMPLETED ✓ Create project: Project 'x' recorded (0.5s)"
    ]
    snapshot = render_plain({"type": "SNAPSHOT", "seq": 4, "step": None}, current, ASCII)
    assert snapshot == [
        "[ 25%] SNAPSHOT initializing, step 2 of 2",
        "       + Create project: Project 'x' recorded (0.5s)",
        "       * Render template",
    ]


@pytest.mark.parametrize(
    ("ms", "text"),
    [
        (None, ""),
        (0, "0.0s"),
        (950, "0.9s"),
        (12_400, "12s"),
        (65_000, "1m05s"),
        (3_720_000, "1h02m"),
    ],
)
def test_durations(ms: int | None, text: str) -> None:
    assert format_duration(ms) == text


def test_lines_are_cut_to_the_terminal_width_never_wrapped() -> None:
    line = [("Shop ", "bold"), ("商店 API with a long name", "")]
    cut = fit(line, 12)
    assert cell_width(plain_text(cut)) <= 12
    assert plain_text(cut) == "Shop 商店 A…"  # 商 and 店 take two cells each


def test_the_live_view_redraws_its_block_in_place(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("LINES", "30")
    stream = io.StringIO()
    view = LiveView(stream=stream, color=True, symbols=UNICODE)
    current = status("INITIALIZING", 5, [running("create_project", 10, message="x" * 80)])
    state = watch(current)
    view.start()
    view.draw(state)
    first = stream.getvalue()
    view.draw(state)
    view.stop()
    second = stream.getvalue()[len(first) :]
    assert first.startswith("\x1b[?25l")  # cursor hidden while drawing
    assert second.startswith(f"\x1b[{len(render_live(state, frame=0, symbols=UNICODE))}A\r")
    assert second.endswith("\x1b[?25h")  # and shown again
    for row in strip_ansi(second).split("\n"):
        assert cell_width(row.strip("\r")) <= 39
