"""What ``initflow create`` / ``initflow watch`` show: the seed's picture in a terminal.

On a terminal, a block of lines redrawn in place with ANSI escape codes (no third-party
library): the project, an overall percent bar with "Step k of n", every step with its
icon — ✓ completed, a spinner while running, · pending, ✗ failed (code and message),
- skipped — its duration from the server's timestamps and its message, and a last line
saying whether the view is live, reconnecting, detached or finished. A stalled step and a
step waiting to be retried say so. Elsewhere (a pipe, a file, CI logs, ``--plain``), one
plain line per event.

Everything here is a pure function of what the server sent (``WatchState``) and the
clock, so it is tested without a terminal; only ``LiveView`` writes escape codes.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

# --- what the server said -------------------------------------------------------------------

TERMINAL_STATES = frozenset({"ACTIVE", "FAILED", "CANCELED"})


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Step:
    name: str
    title: str
    position: int
    status: str
    progress: int = 0
    message: str | None = None
    attempts: int = 0
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    next_attempt_at: datetime | None = None
    stalled_since: datetime | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Step:
        error = data.get("error") or {}
        return cls(
            name=data["name"],
            title=data.get("title") or data["name"],
            position=int(data.get("position") or 0),
            status=data["status"],
            progress=int(data.get("progress") or 0),
            message=data.get("message"),
            attempts=int(data.get("attempts") or 0),
            started_at=_time(data.get("startedAt")),
            completed_at=_time(data.get("completedAt")),
            duration_ms=data.get("durationMs"),
            error_code=error.get("code"),
            error_message=error.get("message"),
            next_attempt_at=_time(data.get("nextAttemptAt")),
            stalled_since=_time(data.get("stalledSince")),
        )

    @property
    def retrying(self) -> bool:
        return self.next_attempt_at is not None and self.status in ("RUNNING", "PENDING")


@dataclass(frozen=True)
class Status:
    project_id: str
    status: str
    progress: int
    seq: int
    steps: tuple[Step, ...]
    error: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        steps = tuple(
            sorted((Step.from_json(s) for s in data.get("steps") or []), key=lambda s: s.position)
        )
        return cls(
            project_id=str(data.get("projectId") or ""),
            status=data["status"],
            progress=int(data.get("progress") or 0),
            seq=int(data.get("seq") or 0),
            steps=steps,
            error=data.get("error"),
        )

    @property
    def finished(self) -> bool:
        return self.status in TERMINAL_STATES

    @property
    def queued(self) -> bool:
        """Initializing but not started yet: no runner has picked it up (distinct from running)."""
        return self.status == "INITIALIZING" and all(
            s.status == "PENDING" and s.attempts == 0 and not s.retrying for s in self.steps
        )

    @property
    def current_step(self) -> Step | None:
        """The running step, else the failed one, else the next pending one."""
        for wanted in ("RUNNING", "FAILED", "PENDING"):
            for step in self.steps:
                if step.status == wanted:
                    return step
        return None

    @property
    def step_number(self) -> tuple[int, int]:
        """(k, n) of "Step k of n": the current step's place; n of n when all are done."""
        total = len(self.steps)
        current = self.current_step
        if current is None or self.status == "ACTIVE":
            return total, total
        return self.steps.index(current) + 1, total


@dataclass
class WatchState:
    """Everything the client knows about one project's initialization, and when it learnt it.

    Durations tick locally between events: a running step's ``durationMs`` was computed by
    the server when the event was sent, so it is advanced by the local monotonic time since
    it arrived (no dependence on the two clocks agreeing). Countdowns to ``nextAttemptAt``
    use the server's clock, estimated from the last running step's timestamps.
    """

    project_id: str
    name: str | None = None
    template: str | None = None
    url: str = ""
    status: Status | None = None
    received_at: float = 0.0
    clock_offset: timedelta = timedelta(0)
    # connecting | live | reconnecting | finished | detached (Ctrl-C) | stopped (an error)
    connection: str = "connecting"
    reconnect_reason: str | None = None
    reconnect_at: float | None = None
    reconnect_attempt: int = 0

    def apply(self, status: Status, *, now: float | None = None) -> None:
        self.status = status
        self.received_at = time.monotonic() if now is None else now
        for step in status.steps:
            if step.status == "RUNNING" and step.started_at and step.duration_ms is not None:
                server_now = step.started_at + timedelta(milliseconds=step.duration_ms)
                self.clock_offset = server_now - datetime.now(UTC)
                break

    def server_now(self) -> datetime:
        return datetime.now(UTC) + self.clock_offset

    def elapsed_ms(self, step: Step, now: float | None = None) -> int | None:
        """A step's duration now: fixed once it ended, ticking while it runs."""
        if step.duration_ms is None:
            return None
        if step.status != "RUNNING":
            return step.duration_ms
        now = time.monotonic() if now is None else now
        return step.duration_ms + max(0, int((now - self.received_at) * 1000))

    def total_ms(self) -> int | None:
        """First step's start to the last completion (a finished run's wall time)."""
        if self.status is None:
            return None
        starts = [s.started_at for s in self.status.steps if s.started_at]
        ends = [s.completed_at for s in self.status.steps if s.completed_at]
        if not starts or not ends:
            return None
        return max(0, int((max(ends) - min(starts)).total_seconds() * 1000))


# --- text -----------------------------------------------------------------------------------


def format_duration(ms: int | None) -> str:
    if ms is None:
        return ""
    seconds = ms / 1000
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{int(seconds)}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class Symbols:
    completed: str
    failed: str
    pending: str
    skipped: str
    retrying: str
    spinner: str
    running: str
    bar_full: str
    bar_empty: str

    def icon(self, step: Step, frame: int | None = None) -> str:
        """A step's icon; a running step's is a spinner frame (a fixed mark without one)."""
        if step.status == "RUNNING" and step.retrying:
            return self.retrying
        return {
            "COMPLETED": self.completed,
            "FAILED": self.failed,
            "PENDING": self.retrying if step.retrying else self.pending,
            "SKIPPED": self.skipped,
            "RUNNING": self.running if frame is None else self.spinner[frame % len(self.spinner)],
        }.get(step.status, "?")


UNICODE = Symbols("✓", "✗", "·", "-", "↻", "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏", "…", "█", "░")
ASCII = Symbols("+", "x", ".", "-", "~", "|/-\\", "*", "#", "-")


def symbols_for(stream: TextIO) -> Symbols:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return UNICODE if encoding.startswith("utf") else ASCII


# A line is a list of spans (text, style); styles become ANSI codes only in LiveView.
Span = tuple[str, str]
Line = list[Span]
STYLES = {
    "": "",
    "bold": "1",
    "dim": "2",
    "green": "32",
    "red": "31",
    "yellow": "33",
    "blue": "94",
    "cyan": "36",
}


def plain_text(line: Line) -> str:
    return "".join(text for text, _ in line)


def _step_detail(state: WatchState, step: Step) -> Span:
    """The words after a step's duration: its message, error, stall or retry countdown."""
    if step.status == "FAILED":
        code = f"{step.error_code}: " if step.error_code else ""
        return f"failed: {code}{step.error_message or step.message or ''}", "red"
    if step.retrying and step.next_attempt_at is not None:
        wait = (step.next_attempt_at - state.server_now()).total_seconds()
        when = f"retrying in {format_duration(int(wait * 1000))}" if wait > 0.5 else "retrying now"
        cause = f" ({step.error_code}: {step.error_message})" if step.error_code else ""
        return f"attempt {step.attempts} failed{cause}; {when}", "yellow"
    message = step.message or ""
    if step.status == "RUNNING":
        text = f"{step.progress}%" + (f"  {message}" if message else "")
        if step.stalled_since is None:
            return text, ""
        quiet = max(0.0, (state.server_now() - step.stalled_since).total_seconds())
        return f"stalled {format_duration(int(quiet * 1000))}: no progress reported  ({text})", (
            "yellow"
        )
    if step.status == "SKIPPED":
        return "skipped" + (f": {message}" if message else ""), "dim"
    return (message, "dim") if step.status == "COMPLETED" else ("", "")


def render_live(
    state: WatchState, *, frame: int | None, symbols: Symbols, now: float | None = None
) -> list[Line]:
    """The block of lines of the live view (no escape codes); ``frame`` turns the spinner."""
    now = time.monotonic() if now is None else now
    title = state.name or f"project {state.project_id}"
    header: Line = [(title, "bold")]
    if state.template:
        header.append((f"  {state.template}", "dim"))
    header.append((f"  {state.project_id}", "dim"))
    lines: list[Line] = [header]
    status = state.status
    if status is None:
        lines.append(_footer(state, symbols, now))
        return lines

    bar_width = 30
    filled = min(bar_width, status.progress * bar_width // 100)
    k, n = status.step_number
    current = status.current_step
    state_word = status.status.lower()
    if status.queued:
        state_word = "queued: waiting for a runner"
    state_style = {"ACTIVE": "green", "FAILED": "red", "CANCELED": "yellow"}.get(
        status.status, "blue"
    )
    bar_style = {"ACTIVE": "green", "FAILED": "red", "CANCELED": "yellow"}.get(
        status.status, "blue"
    )
    summary = f"  {status.progress:3d}%  Step {k} of {n}"
    if current is not None and status.status != "ACTIVE":
        summary += f": {current.title}"
    lines.append(
        [
            (symbols.bar_full * filled, bar_style),
            (symbols.bar_empty * (bar_width - filled), "dim"),
            (summary, "bold"),
            ("  ", ""),
            (state_word, state_style),
        ]
    )

    width = max((len(s.title) for s in status.steps), default=0)
    for step in status.steps:
        icon = symbols.icon(step, frame)
        icon_style = {
            "COMPLETED": "green",
            "FAILED": "red",
            "RUNNING": "yellow" if (step.stalled_since or step.retrying) else "blue",
            "PENDING": "yellow" if step.retrying else "dim",
            "SKIPPED": "dim",
        }.get(step.status, "")
        duration = format_duration(state.elapsed_ms(step, now))
        detail, detail_style = _step_detail(state, step)
        title_style = "bold" if step is current and status.status == "INITIALIZING" else ""
        if step.status in ("PENDING", "SKIPPED") and not step.retrying:
            title_style = "dim"
        line: Line = [
            ("  ", ""),
            (icon, icon_style),
            (" ", ""),
            (step.title.ljust(width), title_style),
            (f"  {duration:>6}", "dim"),
        ]
        if detail:
            line += [("  ", ""), (detail, detail_style)]
        lines.append(line)
    lines.append(_footer(state, symbols, now))
    return lines


def _footer(state: WatchState, symbols: Symbols, now: float) -> Line:
    """The last line: live, connecting, reconnecting (never red), detached, or the outcome."""
    status = state.status
    if state.connection == "reconnecting":
        wait = max(0.0, (state.reconnect_at or now) - now)
        reason = f" · {state.reconnect_reason}" if state.reconnect_reason else ""
        text = (
            f"connection lost; reconnecting in {wait:.0f}s (attempt {state.reconnect_attempt})"
            f" · the initialization continues on the server{reason}"
        )
        return [(text, "yellow")]
    if status is not None and status.finished and state.connection != "detached":
        return _outcome(state, symbols, status)
    return {
        "connecting": [(f"connecting to {state.url}…", "dim")],
        "detached": [("detached; the initialization continues on the server", "yellow")],
        "stopped": [("stopped watching; the initialization continues on the server", "yellow")],
    }.get(
        state.connection,
        [("live · Ctrl-C detaches; the initialization continues on the server", "dim")],
    )


def _outcome(state: WatchState, symbols: Symbols, status: Status) -> Line:
    if status.status == "ACTIVE":
        total = format_duration(state.total_ms())
        return [(f"{symbols.completed} project active", "green"), (f"  in {total}", "dim")]
    if status.status == "FAILED":
        return [(f"{symbols.failed} initialization failed: {status.error or ''}", "red")]
    return [("initialization canceled", "yellow")]


def _plain_step(step: Step, symbols: Symbols) -> str:
    detail = ""
    if step.status == "FAILED":
        code = f"{step.error_code}: " if step.error_code else ""
        detail = f": {code}{step.error_message or step.message or ''}"
    elif step.message and step.status in ("RUNNING", "SKIPPED", "COMPLETED"):
        detail = f": {step.message}"
    if step.status == "COMPLETED" and step.duration_ms is not None:
        detail += f" ({format_duration(step.duration_ms)})"
    return f"{symbols.icon(step)} {step.title}{detail}"


def render_plain(event: dict[str, Any], status: Status, symbols: Symbols) -> list[str]:
    """One line per event (a snapshot: one more per step), for pipes, files and CI logs."""
    kind = str(event["type"])
    prefix = f"[{status.progress:3d}%] {kind}"
    if kind == "SNAPSHOT":
        k, n = status.step_number
        state = "queued" if status.queued else status.status.lower()
        lines = [f"{prefix} {state}, step {k} of {n}"]
        lines += [f"       {_plain_step(step, symbols)}" for step in status.steps]
        return lines
    if kind == "INITIALIZATION_COMPLETED":
        return [f"{prefix} {symbols.completed} project active"]
    if kind in ("INITIALIZATION_FAILED", "INITIALIZATION_CANCELED"):
        return [f"{prefix} {status.error or status.status.lower()}".rstrip()]
    name = (event.get("step") or {}).get("name")
    step = next((s for s in status.steps if s.name == name), None)
    if step is None:
        return [prefix]
    return [f"{prefix} {_plain_step(step, symbols)}"]


# --- terminals ------------------------------------------------------------------------------


def cell_width(text: str) -> int:
    return sum(
        0 if unicodedata.combining(ch) else 2 if unicodedata.east_asian_width(ch) in "WF" else 1
        for ch in text
    )


def fit(line: Line, columns: int) -> Line:
    """Cut a line to ``columns`` cells (an ellipsis marks the cut): no wrapping, ever."""
    if cell_width(plain_text(line)) <= columns:
        return line
    out: Line = []
    room = max(0, columns - 1)
    for text, style in line:
        kept = ""
        for ch in text:
            w = cell_width(ch)
            if w > room:
                break
            kept += ch
            room -= w
        if kept:
            out.append((kept, style))
        if len(kept) < len(text):
            break
    out.append(("…", "dim"))
    return out


def wants_live(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return stream.isatty() and env.get("TERM", "") != "dumb"


@dataclass
class LiveView:
    """Redraws the block in place: cursor up over the last frame, rewrite, clear below."""

    stream: TextIO = field(default_factory=lambda: sys.stdout)
    color: bool = True
    symbols: Symbols = UNICODE
    _height: int = 0
    _frame: int = 0

    def start(self) -> None:
        self.stream.write("\x1b[?25l")  # hide the cursor while redrawing
        self.stream.flush()

    def _paint(self, line: Line) -> str:
        if not self.color:
            return plain_text(line)
        out = []
        for text, style in line:
            code = STYLES.get(style, "")
            out.append(f"\x1b[{code}m{text}\x1b[0m" if code else text)
        return "".join(out)

    def draw(self, state: WatchState, *, final: bool = False) -> None:
        """Redraw the block; the ``final`` frame (left on screen) has no spinner."""
        self._frame += 1
        size = shutil.get_terminal_size((100, 40))
        lines = render_live(state, frame=None if final else self._frame, symbols=self.symbols)
        if len(lines) > size.lines - 1 > 2:  # keep the header, the bar and the footer
            lines = [*lines[: size.lines - 2], lines[-1]]
        text = "".join(f"\x1b[2K{self._paint(fit(line, size.columns - 1))}\n" for line in lines)
        up = f"\x1b[{self._height}A\r" if self._height else "\r"
        self.stream.write(f"{up}{text}\x1b[J")
        self.stream.flush()
        self._height = len(lines)

    def stop(self) -> None:
        self.stream.write("\x1b[?25h")
        self.stream.flush()
