"""The dashboard in a real browser against a real server: the seed's picture, kept honest.

Every wait is on a condition (Playwright's ``expect``/``wait_for_*`` in the page, a polled
API answer outside it), never a bare sleep.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Route, WebSocket, expect

from .conftest import BrokenTemplate, watch_errors
from .server import ApiClient, Server, Worker, step_states

pytestmark = pytest.mark.browser

# Records every distinct rendering of the progress card from the first one on, so a test
# can prove what the *first* paint after load showed (a MutationObserver callback runs
# before the browser paints the mutation).
RECORDER = """
(() => {
  const renders = [];
  window.__renders = renders;
  window.__stepsBeforeSnapshot = 0;
  const record = () => {
    const busy = '[aria-busy="true"] li.step, [aria-busy="true"] [role="progressbar"]';
    if (document.querySelector(busy)) {
      window.__stepsBeforeSnapshot += 1;
    }
    const bar = document.querySelector('[role="progressbar"]');
    if (!bar) return;
    const items = [...document.querySelectorAll('ol.steps > li.step')];
    const rec = {
      t: performance.now(),
      percent: Number(bar.getAttribute('aria-valuenow')),
      valueText: bar.getAttribute('aria-valuetext'),
      states: Object.fromEntries(items.map((li) => [li.dataset.step, li.dataset.state])),
      current: items.filter((li) => li.getAttribute('aria-current') === 'step').length,
      alert: document.querySelector('.failure-alert')?.textContent || '',
      seq: Number(document.querySelector('.progress-card')?.dataset.seq),
    };
    const last = renders[renders.length - 1];
    const key = (r) => JSON.stringify([r.percent, r.states, r.current, r.alert]);
    if (!last || key(last) !== key(rec)) renders.push(rec);
  };
  new MutationObserver(record).observe(document, {
    subtree: true, childList: true, attributes: true, characterData: true,
  });
  // What the persistent live region said, and when.
  window.__announcements = [];
  let lastSaid = '';
  new MutationObserver(() => {
    const text = document.getElementById('announcer')?.textContent || '';
    if (text && text !== lastSaid) window.__announcements.push({ t: performance.now(), text });
    lastSaid = text;
  }).observe(document, { subtree: true, childList: true, characterData: true });
  // Layout shifts of the page (Cumulative Layout Shift without user input).
  window.__layoutShift = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      if (!entry.hadRecentInput) window.__layoutShift += entry.value;
    }
  }).observe({ type: 'layout-shift', buffered: true });
})();
"""

# Server step state -> what the page may show for it (data-state of the <li>).
PAGE_STATES = {
    "COMPLETED": {"completed"},
    "RUNNING": {"running", "stalled", "retrying"},
    "PENDING": {"pending", "queued"},
    "FAILED": {"failed"},
    "SKIPPED": {"skipped"},
}


def project_url(server: Server, project_id: str) -> str:
    return f"{server.url}/projects/{project_id}"


def completed_count(status: dict[str, Any]) -> int:
    return sum(1 for s in status["steps"] if s["status"] in ("COMPLETED", "SKIPPED"))


def running_name(status: dict[str, Any]) -> str | None:
    return next((s["name"] for s in status["steps"] if s["status"] == "RUNNING"), None)


def wait_for_page_steps(page: Page, completed: int) -> None:
    """Until the page shows at least ``completed`` finished steps and a later one running.

    Selectors, not ``wait_for_function``: the page's CSP (rightly) forbids the eval that
    Playwright's function polling needs. Steps finish in order, so "the n-th is completed
    and a later sibling runs" is "at least n completed, one running".
    """
    selector = (
        f"ol.steps > li.step:nth-child({completed})[data-state=completed]"
        " ~ li.step[data-state=running]"
        if completed
        else "ol.steps > li.step[data-state=running]"
    )
    page.wait_for_selector(selector)


def first_render(page: Page) -> dict[str, Any]:
    page.wait_for_selector("[role=progressbar]", state="attached")
    records = renders(page)
    assert records, "the recorder saw no rendering"
    return records[0]


def renders(page: Page) -> list[dict[str, Any]]:
    value: list[dict[str, Any]] = page.evaluate("window.__renders")
    return value


def assert_monotonic(records: list[dict[str, Any]]) -> None:
    percents = [r["percent"] for r in records]
    assert percents == sorted(percents), f"displayed percent went down: {percents}"


def assert_matches_server(
    shown: dict[str, str], before: dict[str, Any], after: dict[str, Any]
) -> None:
    """Each step on the page is in the state the server reported just before or just after."""
    old, new = step_states(before), step_states(after)
    for name, state in shown.items():
        allowed = PAGE_STATES[old[name]] | PAGE_STATES[new[name]]
        if (old[name], new[name]) == ("PENDING", "COMPLETED"):
            allowed |= PAGE_STATES["RUNNING"]  # it ran in between
        assert state in allowed, f"{name}: page shows {state}, server {old[name]}→{new[name]}"


def test_reload_half_way_restores_exact_state_without_flash(
    signed_in_page: Page, server: Server, api: ApiClient, artifacts: Path, page_errors: list[str]
) -> None:
    page = signed_in_page
    project_id = api.create_project("Half way")
    page.goto(project_url(server, project_id))
    other_tab = page.context.new_page()
    other_tab.goto(project_url(server, project_id))
    wait_for_page_steps(page, 3)
    # A second tab converges on the same picture within 2 s of each event.
    expect(other_tab.locator("li.step[data-step=create_environments]")).to_have_attribute(
        "data-state", "completed", timeout=2_000
    )
    expect(page.locator("li.step[data-state=running] .step-state")).to_have_text("In progress")
    spinner = page.locator("li.step[data-state=running] .spinner")
    assert spinner.evaluate("el => getComputedStyle(el).animationName") == "spin"
    page.screenshot(path=str(artifacts / "dashboard-half-way.png"), full_page=True)

    page.add_init_script(RECORDER)
    before = api.status(project_id)
    assert 0 < before["progress"] < 100
    page.reload()
    first = first_render(page)
    after = api.status(project_id)

    # The first thing drawn is the snapshot: no 0 %, no all-pending list, no regression.
    assert page.evaluate("window.__stepsBeforeSnapshot") == 0
    assert before["progress"] <= first["percent"] <= after["progress"], (before, first, after)
    assert first["percent"] > 0
    assert_matches_server(first["states"], before, after)
    assert list(first["states"].values()).count("completed") >= completed_count(before)
    assert first["current"] == 1
    assert re.fullmatch(r"Step \d of 7: .+", first["valueText"])
    assert first["t"] < 3000, f"first render {first['t']:.0f} ms after navigation"

    # The summary pairs the percent with "Step k of n · title", and a11y semantics hold.
    expect(page.locator("#step-summary")).to_have_text(re.compile(r"^Step \d of 7 · .+"))
    bar = page.get_by_role("progressbar", name="Initialization progress")
    expect(bar).to_have_attribute("aria-valuemin", "0")
    expect(page.locator("ol.steps > li[aria-current=step]")).to_have_count(1)
    for icon in page.locator("ol.steps .step-icon").all():
        assert icon.get_attribute("aria-hidden") == "true"

    # Completion: every step checked, 100 %, a success heading, the clone command; no redirect.
    page.wait_for_selector(".progress-card[data-state=active]", timeout=40_000)
    expect(page.locator("li.step[data-state=completed]")).to_have_count(7)
    expect(bar).to_have_attribute("aria-valuenow", "100")
    expect(page.locator("#status-heading")).to_have_text("Project ready")
    expect(page.locator(".clone-command")).to_contain_text(
        f'git -c http.extraHeader="Authorization: Bearer $INITFLOW_TOKEN" clone {server.url}/git/'
    )
    expect(page.locator(".done-card .chip")).to_have_text(["development", "staging", "production"])
    expect(other_tab.locator(".progress-card")).to_have_attribute(
        "data-state", "active", timeout=2_000
    )
    for li in page.locator("li.step").all():
        expect(li.locator(".step-time-text")).to_have_text(re.compile(r"^\d+\.\d s$"))
    assert_monotonic(renders(page))
    assert page.url == project_url(server, project_id)
    page.screenshot(path=str(artifacts / "dashboard-finished.png"), full_page=True)

    # Announcements: one per step transition plus completion; plain progress at most once
    # per 5 s; never the raw step messages ("files 3/9: …").
    said: list[dict[str, Any]] = page.evaluate("window.__announcements")
    texts = [a["text"] for a in said]
    assert texts[-1] == "Finalize done. Initialization complete: Half way is ready."
    assert any(t.startswith("Push template done. Configure GitOps…") for t in texts), texts
    progress_times = [a["t"] for a in said if re.fullmatch(r"\d+% complete\.", a["text"])]
    assert all(b - a >= 5000 for a, b in itertools.pairwise(progress_times))
    assert not any("files " in t for t in texts), texts
    assert page.evaluate("window.__layoutShift") < 0.02
    assert page_errors == []


def test_work_continues_while_the_page_is_closed(
    new_context: Callable[..., BrowserContext], shared: tuple[Server, str], api: ApiClient
) -> None:
    server, token = shared
    project_id = api.create_project("Closed tab")
    context = new_context(token)
    page = context.new_page()
    page.goto(project_url(server, project_id))
    wait_for_page_steps(page, 1)
    closed_at = api.status(project_id)
    k = running_name(closed_at)
    assert k is not None
    context.close()

    names = [s["name"] for s in closed_at["steps"]]
    following = names[names.index(k) + 1]
    after = api.wait_status(
        project_id,
        lambda s: step_states(s)[following] == "COMPLETED",
        what=f"{following} to complete with no page open",
    )

    page = new_context(token).new_page()
    page.add_init_script(RECORDER)
    page.goto(project_url(server, project_id))
    first = first_render(page)
    assert first["states"][k] == "completed"
    assert first["states"][following] == "completed"
    assert first["percent"] >= after["progress"]
    expect(page.locator(f"li.step[data-step={following}] .step-state")).to_have_text("Completed")


def _frames(page: Page) -> list[list[dict[str, Any]]]:
    """graphql-transport-ws messages per socket, in order ("out"/"in" tagged)."""
    sockets: list[list[dict[str, Any]]] = []

    def on_socket(ws: WebSocket) -> None:
        frames: list[dict[str, Any]] = []
        sockets.append(frames)

        def sent(payload: str | bytes) -> None:
            frames.append({"dir": "out", **json.loads(payload)})

        def received(payload: str | bytes) -> None:
            frames.append({"dir": "in", **json.loads(payload)})

        ws.on("framesent", sent)
        ws.on("framereceived", received)

    page.on("websocket", on_socket)
    return sockets


def test_server_killed_then_restarted_page_recovers_without_red(
    new_context: Callable[..., BrowserContext],
    start_server: Callable[..., tuple[Server, str]],
    artifacts: Path,
) -> None:
    server, token = start_server()
    api = ApiClient(server.url, token)
    project_id = api.create_project("Survives a crash")
    page = new_context(token).new_page()
    page.add_init_script(RECORDER)
    sockets = _frames(page)
    page.goto(project_url(server, project_id))
    wait_for_page_steps(page, 2)

    server.kill()
    banner = page.get_by_role("status").filter(has_text="Connection lost — reconnecting…")
    expect(banner).to_be_visible(timeout=5_000)
    expect(page.get_by_role("button", name="Retry now")).to_be_visible()
    # Transport trouble is not a task failure: nothing red, nothing alarming.
    expect(page.locator("li.step[data-state=failed]")).to_have_count(0)
    expect(page.locator(".failure-alert")).to_be_empty()
    page.screenshot(path=str(artifacts / "dashboard-reconnecting.png"), full_page=True)
    percent_while_down = page.get_by_role("progressbar").get_attribute("aria-valuenow")
    # The running step's timer keeps counting from the server's startedAt.
    timer = page.locator("li.step[data-state=running] .step-time-text")
    shown = timer.text_content()
    expect(timer).not_to_have_text(shown or "", timeout=5_000)
    assert page.get_by_role("progressbar").get_attribute("aria-valuenow") == percent_while_down
    # "Retry now" tries at once; with the server still down the banner simply stays.
    attempts = len(sockets)
    with page.expect_websocket():
        page.get_by_role("button", name="Retry now").click()
    assert len(sockets) > attempts
    expect(banner).to_be_visible()

    server.start()
    page.wait_for_selector(".progress-card[data-state=active]", timeout=45_000)
    expect(banner).to_have_count(0)
    expect(page.locator("li.step[data-state=completed]")).to_have_count(7)

    history = renders(page)
    assert all("failed" not in r["states"].values() for r in history)
    assert all(not r["alert"] for r in history)
    assert_monotonic(history)

    # Gap-free, duplicate-free catch-up: the second socket resubscribed after the last seq
    # the page had, and the seqs across both sockets run 1 by 1 to the terminal event.
    assert len(sockets) >= 2
    subscribes = [f for s in sockets for f in s if f["dir"] == "out" and f["type"] == "subscribe"]
    seqs = [
        f["payload"]["data"]["initProgress"]["seq"]
        for s in sockets
        for f in s
        if f["dir"] == "in" and f["type"] == "next"
    ]
    first_after = subscribes[0]["payload"]["variables"]["afterSeq"]
    assert seqs == list(range(first_after + 1, first_after + 1 + len(seqs))), seqs
    last_before_kill = max(
        f["payload"]["data"]["initProgress"]["seq"]
        for f in sockets[0]
        if f["dir"] == "in" and f["type"] == "next"
    )
    resumed = [f["payload"]["variables"]["afterSeq"] for f in subscribes[1:]]
    assert resumed[0] == last_before_kill, (resumed, last_before_kill)
    assert seqs[-1] == api.status(project_id)["seq"]


def test_failed_step_then_retry_resumes_from_it(
    signed_in_page: Page,
    server: Server,
    api: ApiClient,
    broken_template: BrokenTemplate,
    artifacts: Path,
) -> None:
    page = signed_in_page
    broken_template.break_()
    project_id = api.create_project("Broken then fixed", template="broken-site")
    page.goto(project_url(server, project_id))

    alert = page.get_by_role("alert").filter(has_text="Render template failed")
    expect(alert).to_be_visible(timeout=20_000)
    failed = page.locator("li.step[data-step=render_template]")
    expect(failed).to_have_attribute("data-state", "failed")
    expect(failed.locator(".step-state")).to_have_text("Failed")
    expect(page.locator(".failure-details")).to_contain_text("TEMPLATE_RENDER_FAILED")
    status = api.status(project_id)
    assert status["status"] == "FAILED"
    bar = page.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", str(status["progress"]))
    expect(bar).to_have_attribute("aria-valuetext", "Failed at step 2 of 7: Render template")

    # Still there after a reload: the failure is persistent, not a transient toast.
    page.reload()
    expect(alert).to_be_visible()
    page.screenshot(path=str(artifacts / "dashboard-failed.png"), full_page=True)
    completed_before = {s["name"]: s["completedAt"] for s in status["steps"]}

    retries: list[str] = []
    page.on(
        "request",
        lambda request: (
            retries.append(request.url)
            if request.method == "POST" and "retryInitialization" in (request.post_data or "")
            else None
        ),
    )
    broken_template.fix()
    page.get_by_role("button", name="Retry").dblclick()

    # Focus is not dropped on <body> when the Retry button goes away.
    expect(page.locator(".failure-alert")).to_be_empty()
    focused = page.evaluate("document.activeElement.dataset.step || document.activeElement.id")
    assert focused in ("render_template", "status-heading")

    page.wait_for_selector(".progress-card[data-state=active]", timeout=40_000)
    assert len(retries) == 1, retries
    after = api.status(project_id)
    assert after["status"] == "ACTIVE"
    assert {s["name"]: s["completedAt"] for s in after["steps"]}["create_project"] == (
        completed_before["create_project"]
    )
    assert next(s for s in after["steps"] if s["name"] == "create_project")["attempts"] == 1
    expect(page.locator("li.step[data-state=completed]")).to_have_count(7)


def test_cancel_asks_first_and_ends_canceled_not_failed(
    signed_in_page: Page, server: Server, api: ApiClient, artifacts: Path
) -> None:
    page = signed_in_page
    project_id = api.create_project("Changed my mind")
    page.goto(project_url(server, project_id))
    wait_for_page_steps(page, 1)

    page.get_by_role("button", name="Cancel initialization").click()
    dialog = page.get_by_role("dialog", name="Cancel initialization?")
    expect(dialog).to_be_visible()
    dialog.get_by_role("button", name="Keep going").click()
    expect(dialog).to_be_hidden()
    assert api.status(project_id)["status"] == "INITIALIZING"

    page.get_by_role("button", name="Cancel initialization").click()
    dialog.get_by_role("button", name="Cancel initialization").click()
    expect(page.locator("#status-heading")).to_have_text("Initialization canceled")
    expect(page.locator(".title-badge")).to_have_text("Canceled")
    expect(page.locator(".spinner")).to_have_count(0)
    expect(page.locator("li.step[data-state=failed]")).to_have_count(0)
    expect(page.locator("li.step[data-state=canceled]")).to_have_count(1)
    expect(page.get_by_role("button", name="Resume initialization")).to_be_visible()
    expect(page.locator(".failure-alert")).to_be_empty()
    page.screenshot(path=str(artifacts / "dashboard-canceled.png"), full_page=True)
    focused = page.evaluate("document.activeElement.id")
    assert focused == "status-heading"
    assert api.status(project_id)["status"] == "CANCELED"


def tab_to(page: Page, predicate: str, limit: int = 40) -> None:
    """Press Tab until ``predicate(document.activeElement)`` holds."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate(f"(el => {predicate})(document.activeElement)"):
            return
    raise AssertionError(f"Tab never reached an element where {predicate}")


def test_keyboard_only_sign_in_create_and_open(
    new_context: Callable[..., BrowserContext], shared: tuple[Server, str], api: ApiClient
) -> None:
    server, token = shared
    page = new_context().new_page()
    page.goto(server.url + "/")

    # The token field has focus on arrival. A wrong token first: a clear message, focus back.
    expect(page.locator("#token")).to_be_focused()
    page.keyboard.type("ifl_not-a-real-token")
    page.keyboard.press("Enter")
    expect(page.locator("#token-error")).to_contain_text("That token was not accepted")
    assert page.evaluate("document.activeElement.id") == "token"

    page.keyboard.press("Control+A")
    page.keyboard.type(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Projects")

    tab_to(page, "el.matches('main a[href=\"/projects/new\"]')")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Create project")
    tab_to(page, "el.id === 'f-name'")
    name = f"Keyboard {time.time_ns()}"
    page.keyboard.type(name)
    page.keyboard.press("Enter")
    expect(page.locator(".progress-card[data-state]")).to_be_visible()
    project_id = page.url.rsplit("/", 1)[1]
    assert [p["id"] for p in api.projects_named(name)] == [project_id]

    tab_to(page, "el.matches('nav a[href=\"/\"]')", limit=60)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Projects")
    link = page.get_by_role("link", name=name)
    expect(link).to_be_visible()
    tab_to(page, f"el.getAttribute('href') === '/projects/{project_id}'", limit=60)
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    assert page.url == project_url(server, project_id)


def test_create_form_maps_user_errors_and_double_submit_creates_one(
    signed_in_page: Page, server: Server, api: ApiClient
) -> None:
    page = signed_in_page
    page.goto(server.url + "/projects/new")
    page.get_by_label("Python web service").check()
    port = page.get_by_label("Port")
    expect(port).to_have_attribute("type", "number")
    port.fill("80")
    page.get_by_label("Environments").fill("dev, Not Valid")
    page.get_by_role("button", name="Create project").click()

    summary = page.locator(".error-summary")
    expect(summary).to_be_focused()
    expect(page.locator("#f-name-error")).to_have_text("Name must not be empty.")
    expect(page.locator("#f-param-port-error")).to_contain_text("1024")
    expect(port).to_have_attribute("aria-invalid", "true")
    expect(page.locator("#f-environments-error")).to_contain_text("Not Valid")

    name = f"Double submit {time.time_ns()}"
    page.get_by_label("Project name").fill(name)
    port.fill("8080")
    page.get_by_label("Environments").fill("dev, prod")
    creates: list[str] = []
    page.on(
        "request",
        lambda r: creates.append(r.url) if "createProject" in (r.post_data or "") else None,
    )
    page.get_by_role("button", name="Create project").dblclick()
    page.wait_for_url(re.compile(r"/projects/[0-9a-f-]{36}$"))
    expect(page.get_by_role("heading", level=1)).to_have_text(name)
    assert len(api.projects_named(name)) == 1
    assert len(creates) == 1


def test_reduced_motion_stops_the_spinner_but_keeps_liveness(
    new_context: Callable[..., BrowserContext], shared: tuple[Server, str], api: ApiClient
) -> None:
    server, token = shared
    page = new_context(token, reduced_motion="reduce").new_page()
    project_id = api.create_project("Calm please")
    page.goto(project_url(server, project_id))
    running = page.locator("li.step[data-state=running]")
    expect(running).to_have_count(1)
    spinner = running.locator(".spinner")
    assert spinner.evaluate("el => getComputedStyle(el).animationName") == "none"
    expect(running.locator(".step-state")).to_have_text("In progress")
    expect(running.locator(".step-time-text")).to_have_text(re.compile(r"^\d+:\d\d$"))
    transition = page.locator(".bar-fill").evaluate("el => getComputedStyle(el).transitionDuration")
    assert transition in ("0s", "0ms")


def test_unknown_project_explains_instead_of_spinning(signed_in_page: Page, server: Server) -> None:
    page = signed_in_page
    page.goto(server.url + "/projects/00000000-0000-0000-0000-000000000000")
    expect(page.get_by_role("heading", level=1)).to_have_text("Project not found")
    expect(page.locator("[role=progressbar]")).to_have_count(0)


def test_hidden_tab_title_and_favicon_reflect_the_outcome(
    new_context: Callable[..., BrowserContext],
    shared: tuple[Server, str],
    api: ApiClient,
    broken_template: BrokenTemplate,
) -> None:
    server, token = shared
    page = new_context(token).new_page()
    errors: list[str] = []
    watch_errors(page, errors)
    broken_template.break_()
    project_id = api.create_project("Background tab", template="broken-site")
    page.goto(project_url(server, project_id))
    wait_for_page_steps(page, 0)
    # Pretend the tab went to the background (headless pages are always "visible").
    page.evaluate(
        """() => {
            const fake = (name, value) =>
                Object.defineProperty(document, name, { configurable: true, get: () => value });
            fake('visibilityState', 'hidden');
            fake('hidden', true);
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    expect(page).to_have_title(re.compile(r"^\d+% · Background tab — initflow$"))
    expect(page).to_have_title("✕ Setup failed — Background tab", timeout=20_000)
    assert page.locator("#favicon").get_attribute("href") == "/static/favicon-failed.svg"
    page.evaluate(
        """() => {
            delete document.visibilityState; delete document.hidden;
            document.dispatchEvent(new Event('visibilitychange'));
        }"""
    )
    expect(page).to_have_title("Background tab — initflow")
    assert page.locator("#favicon").get_attribute("href") == "/static/favicon.svg"
    assert errors == []


def test_queued_is_distinct_from_running_and_a_stalled_step_stops_spinning(
    new_context: Callable[..., BrowserContext],
    start_server: Callable[..., tuple[Server, str]],
    artifacts: Path,
) -> None:
    # The API alone: nothing runs the project until a worker starts. The lease outlives
    # the pause below, however slow the machine: this is a stall, not a takeover.
    server, token = start_server(
        "--no-runner", INITFLOW_STALL_AFTER_SECONDS="2", INITFLOW_LEASE_TTL_SECONDS="120"
    )
    api = ApiClient(server.url, token)
    project_id = api.create_project("Waiting for a worker")
    page = new_context(token).new_page()
    page.goto(project_url(server, project_id))

    expect(page.locator("#status-heading")).to_have_text("Queued — waiting for a worker")
    expect(page.locator(".spinner")).to_have_count(0)
    expect(page.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "0")
    queued = page.locator("li.step[data-state=queued]")
    expect(queued).to_have_attribute("aria-current", "step")
    expect(queued).to_have_attribute("data-step", "create_project")
    expect(page.locator("#status-note")).to_contain_text("Waiting since")
    page.screenshot(path=str(artifacts / "dashboard-queued.png"), full_page=True)

    worker = Worker(server).start()
    try:
        wait_for_page_steps(page, 1)
        expect(page.locator("#status-heading")).to_have_text("Setting up")
        # The runner freezes mid-step; the connection stays healthy. The server reports the
        # step as stalled; the page stops the spinner and says so, without calling it failed.
        worker.pause()
        stalled = page.locator("li.step[data-state=stalled]")
        expect(stalled).to_have_count(1, timeout=15_000)
        expect(stalled.locator(".step-state")).to_have_text("In progress")
        expect(stalled.locator(".step-detail")).to_contain_text("still working")
        expect(page.locator("#status-note")).to_contain_text(
            re.compile(r"No update since .+ — still working")
        )
        expect(page.locator(".spinner")).to_have_count(0)
        expect(page.locator("li.step[data-state=failed]")).to_have_count(0)
        page.screenshot(path=str(artifacts / "dashboard-stalled.png"), full_page=True)
        # Once the runner moves again, so does the page.
        worker.resume()
        expect(page.locator("li.step[data-state=stalled]")).to_have_count(0, timeout=15_000)
        expect(page.locator(".spinner")).to_have_count(1)
    finally:
        worker.stop()


def test_a_failed_first_load_offers_try_again_not_zero_percent(
    signed_in_page: Page, server: Server, api: ApiClient
) -> None:
    page = signed_in_page
    project_id = api.create_project("Flaky network")

    def refuse(route: Route) -> None:
        route.abort("connectionrefused")

    page.route("**/graphql", refuse)
    page.goto(project_url(server, project_id))
    expect(page.get_by_role("heading", level=1)).to_have_text("Couldn't load this project")
    expect(page.get_by_role("alert")).to_contain_text("could not be reached")
    expect(page.locator("[role=progressbar]")).to_have_count(0)
    expect(page.locator("li.step")).to_have_count(0)
    page.unroute("**/graphql", refuse)
    page.get_by_role("button", name="Try again").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Flaky network")
    expect(page.get_by_role("progressbar")).to_be_visible()


def test_going_offline_shows_a_banner_and_catches_up_when_back(
    new_context: Callable[..., BrowserContext], shared: tuple[Server, str], api: ApiClient
) -> None:
    server, token = shared
    context = new_context(token)
    page = context.new_page()
    project_id = api.create_project("Train tunnel")
    page.goto(project_url(server, project_id))
    wait_for_page_steps(page, 1)
    shown_percent = int(page.get_by_role("progressbar").get_attribute("aria-valuenow") or "0")

    context.set_offline(True)
    banner = page.get_by_role("status").filter(has_text="Connection lost — reconnecting…")
    expect(banner).to_be_visible(timeout=5_000)
    expect(page.locator("li.step[data-state=failed]")).to_have_count(0)
    before = api.status(project_id)
    api.wait_status(
        project_id,
        lambda s: completed_count(s) > completed_count(before),
        what="a step to finish while the page is offline",
    )

    context.set_offline(False)
    expect(banner).to_have_count(0, timeout=10_000)
    now = api.status(project_id)
    for step in now["steps"]:
        if step["status"] == "COMPLETED":
            expect(page.locator(f"li.step[data-step={step['name']}]")).to_have_attribute(
                "data-state", "completed", timeout=5_000
            )
    assert int(page.get_by_role("progressbar").get_attribute("aria-valuenow") or "0") >= (
        shown_percent
    )
