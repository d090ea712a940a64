"""Browser tests: Debian's Chromium driven by Playwright (sync API) against a real
``initflow serve`` child process.

One server per module serves most tests (each test makes its own project, so they do not
interfere); the crash test starts its own so it can SIGKILL and restart it. Every test gets
a fresh browser context (its own localStorage). Screenshots go to ``test-artifacts/`` at the
repository root.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from e2e.processes import create_user
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from .server import ApiClient, Server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Long enough to watch a run half-way, short enough for a ~9 s run of seven steps.
STEP_DELAY_SECONDS = "1.2"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

BROKEN_TEMPLATE_TOML = """\
title = "Broken site"
description = "A template whose README refers to a variable nobody defines."
"""
BROKEN_README = "# {{ project_name }}\n\n{{ undefined_var }}\n"
FIXED_README = "# {{ project_name }}\n\nFixed.\n"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A missing browser is a failure, never a skip: CI must run these tests."""
    if not CHROMIUM.exists():
        raise pytest.UsageError(
            f"{CHROMIUM} is not installed: apt-get install chromium (see README)"
        )


class BrokenTemplate:
    """``broken-site``: render_template fails permanently until ``fix()``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / "broken-site"
        self.readme = self.folder / "files" / "README.md.j2"
        self.readme.parent.mkdir(parents=True, exist_ok=True)
        (self.folder / "template.toml").write_text(BROKEN_TEMPLATE_TOML)
        self.break_()

    def break_(self) -> None:
        self.readme.write_text(BROKEN_README)

    def fix(self) -> None:
        self.readme.write_text(FIXED_README)


@pytest.fixture(scope="module")
def _user_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data dir with user ``alice``, made once per module and copied by each server."""
    data_dir = tmp_path_factory.mktemp("seed") / "data"
    return data_dir, create_user(data_dir, "alice")


@pytest.fixture(scope="module")
def broken_template(tmp_path_factory: pytest.TempPathFactory) -> BrokenTemplate:
    return BrokenTemplate(tmp_path_factory.mktemp("templates"))


@pytest.fixture(scope="module")
def start_server(
    tmp_path_factory: pytest.TempPathFactory,
    _user_data: tuple[Path, str],
    broken_template: BrokenTemplate,
) -> Iterator[Callable[..., tuple[Server, str]]]:
    """``start(*args, **env) -> (server, token)``: a fresh data dir (copied from the seed)
    and ``initflow serve *args`` with extra environment ``env``."""
    started: list[Server] = []

    def start(*args: str, **env: str) -> tuple[Server, str]:
        seed, token = _user_data
        base = tmp_path_factory.mktemp("server")
        data_dir = base / "data"
        shutil.copytree(seed, data_dir)
        server = Server(
            data_dir,
            base / "logs",
            {
                "INITFLOW_STEP_DELAY_SECONDS": STEP_DELAY_SECONDS,
                "INITFLOW_TEMPLATE_DIRS": str(broken_template.root),
                **env,
            },
            args,
        )
        started.append(server)
        server.start()
        return server, token

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared(start_server: Callable[..., tuple[Server, str]]) -> tuple[Server, str]:
    return start_server()


@pytest.fixture
def server(shared: tuple[Server, str]) -> Server:
    return shared[0]


@pytest.fixture
def api(shared: tuple[Server, str]) -> ApiClient:
    server, token = shared
    return ApiClient(server.url, token)


@pytest.fixture(scope="module")
def playwright_instance() -> Iterator[Playwright]:
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="module")
def browser(playwright_instance: Playwright) -> Iterator[Browser]:
    browser = playwright_instance.chromium.launch(
        executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
    )
    yield browser
    browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """``new_context(token=None, **options)``: a context, signed in when given a token."""
    contexts: list[BrowserContext] = []

    def make(token: str | None = None, **options: object) -> BrowserContext:
        options.setdefault("viewport", {"width": 1100, "height": 900})
        context = browser.new_context(**options)  # type: ignore[arg-type]
        context.set_default_timeout(20_000)
        if token is not None:
            context.add_init_script(
                f"window.localStorage.setItem('initflow.token', {json.dumps(token)});"
            )
        contexts.append(context)
        return context

    yield make
    for context in contexts:
        context.close()


@pytest.fixture
def page_errors() -> list[str]:
    return []


@pytest.fixture
def signed_in_page(
    new_context: Callable[..., BrowserContext], shared: tuple[Server, str], page_errors: list[str]
) -> Page:
    _, token = shared
    page = new_context(token).new_page()
    watch_errors(page, page_errors)
    return page


def watch_errors(page: Page, errors: list[str]) -> None:
    """Collect uncaught page errors and console errors (a CSP violation is one)."""
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on(
        "console",
        lambda message: (
            errors.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
