"""The GraphQL playground works without internet (issue #5, item 3).

``GET /graphql`` from a browser: with the assets missing, a page that says what to run;
with them fetched (for real, from the npm registry, once per session), Strawberry's
GraphiQL page pointing only at this server, whose files match the page's integrity
hashes byte for byte. ``INITFLOW_GRAPHQL_IDE=0`` turns the playground off.
"""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
from aiohttp.test_utils import TestClient
from playwright import sync_api

from initflow.app import create_app
from initflow.assets import ide_assets, ide_page_html
from initflow.settings import Settings
from tests.e2e.processes import INITFLOW, ServiceProcess

from .conftest import client_environment

HTML = {"Accept": "text/html,application/xhtml+xml"}
ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class Tags(HTMLParser):
    """Every URL a page loads (``src``/``href``) with the tag's ``integrity``."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for attribute in ("src", "href"):
            if values.get(attribute):
                self.urls.append((tag, values[attribute] or "", values.get("integrity")))


def page_urls(html: str) -> list[tuple[str, str, str | None]]:
    parser = Tags()
    parser.feed(html)
    return parser.urls


def sri(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    assert algorithm in ("sha256", "sha384", "sha512"), integrity
    return base64.b64encode(hashlib.new(algorithm, data).digest()).decode() == expected


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def with_assets(data_dir: Path, graphiql_assets: Path) -> Path:
    """A data dir holding a copy of the fetched assets (tests may alter their copy)."""
    shutil.copytree(graphiql_assets, data_dir / "graphiql")
    return data_dir / "graphiql"


async def playground(
    aiohttp_client: ClientFactory, data_dir: Path, *, ide: bool = True
) -> TestClient[Any, Any]:
    settings = Settings(data_dir=data_dir, instance_id="graphiql-test", graphql_ide=ide)
    return await aiohttp_client(create_app(settings))


async def test_without_assets_the_page_says_what_to_run_instead_of_loading_forever(
    aiohttp_client: ClientFactory, data_dir: Path
) -> None:
    client = await playground(aiohttp_client, data_dir)
    response = await client.get("/graphql", headers=HTML)
    assert response.status == 200
    assert response.content_type == "text/html"
    page = await response.text()
    text = re.sub(r"<[^>]+>", "", page)
    assert (
        "run initflow graphiql fetch on the server, then reload" in " ".join(text.split()).lower()
    )
    assert "Loading" not in page
    # Nothing on it is fetched from elsewhere: no scripts at all, styles inline.
    assert "<script" not in page
    assert all(not url.startswith(("http:", "https:", "//")) for _, url, _ in page_urls(page))
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]
    # Every missing file is named, and a browser with internet can still opt into the CDN.
    for asset in ide_assets(ide_page_html()):
        assert asset.relative in page
    assert 'href="?ide=cdn"' in page
    cdn = await (await client.get("/graphql?ide=cdn", headers=HTML)).text()
    assert "https://unpkg.com/graphiql@" in cdn


async def test_with_assets_the_page_loads_only_local_files_matching_its_integrity_hashes(
    aiohttp_client: ClientFactory, data_dir: Path, with_assets: Path
) -> None:
    client = await playground(aiohttp_client, data_dir)
    response = await client.get("/graphql", headers=HTML)
    assert response.status == 200
    page = await response.text()
    assert "graphiql.min.js" in page and "GraphiQL.createFetcher" in page
    loaded = [(tag, url, sri_) for tag, url, sri_ in page_urls(page) if tag in ("script", "link")]
    external = [url for _, url, _ in loaded if not url.startswith("data:")]
    assert len(external) == 7, (
        external
    )  # react, react-dom, js-cookie, graphiql CSS+JS, explorer CSS+JS
    page_url = str(client.make_url("/graphql"))
    for tag, url, integrity in loaded:
        if url.startswith("data:"):
            continue
        assert not re.match(r"^(https?:)?//", url), f"{url} is not on this server"
        assert integrity, f"{url} lost its integrity attribute"
        path = urljoin(page_url, url).removeprefix(str(client.make_url("")).rstrip("/"))
        asset = await client.get(path)
        assert asset.status == 200, url
        body = await asset.read()
        assert sri(body, integrity), f"{url}: bytes do not match {integrity}"
        expected_type = "text/css" if tag == "link" else "text/javascript"
        assert asset.content_type == expected_type
        assert "immutable" in asset.headers["Cache-Control"]


@pytest.fixture
def altered(with_assets: Path) -> str:
    """One asset with a byte appended, and a stray file next to the assets."""
    target = next(with_assets.rglob("react.production.min.js"))
    target.write_bytes(target.read_bytes() + b"\n// altered")
    (with_assets / "notes.txt").write_text("not an asset")
    return target.relative_to(with_assets).as_posix()


async def test_an_altered_asset_counts_as_missing_and_is_never_served(
    aiohttp_client: ClientFactory, data_dir: Path, altered: str
) -> None:
    client = await playground(aiohttp_client, data_dir)
    page = await (await client.get("/graphql", headers=HTML)).text()
    assert "initflow graphiql fetch" in page
    assert altered in page  # named as missing
    assert (await client.get(f"/graphiql-assets/{altered}")).status == 404
    # Only the page's own files are served: no other path under the data dir.
    for path in ("notes.txt", "../instance-id", "%2e%2e/instance-id"):
        assert (await client.get(f"/graphiql-assets/{path}")).status == 404


async def test_the_playground_can_be_turned_off(
    aiohttp_client: ClientFactory,
    data_dir: Path,
    with_assets: Path,
) -> None:
    client = await playground(aiohttp_client, data_dir, ide=False)
    assert (await client.get("/graphql", headers=HTML)).status == 404
    asset = ide_assets(ide_page_html())[0]
    assert (await client.get(f"/graphiql-assets/{asset.relative}")).status == 404
    # The API itself is untouched.
    response = await client.post("/graphql", json={"query": "{ __typename }"})
    assert (await response.json())["data"] == {"__typename": "Query"}


def test_fetch_keeps_verified_files_and_explains_a_failure(
    tmp_path: Path, graphiql_assets: Path
) -> None:
    data_dir = tmp_path / "data"
    shutil.copytree(graphiql_assets, data_dir / "graphiql")
    unreachable = "http://127.0.0.1:9"  # discard port: nothing listens
    again = subprocess.run(
        [INITFLOW, "graphiql", "fetch", "--registry", unreachable],
        env=client_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert again.returncode == 0, again.stderr
    assert "already present and verified" in again.stdout

    shutil.rmtree(data_dir / "graphiql" / "js-cookie@3.0.5")
    failed = subprocess.run(
        [INITFLOW, "graphiql", "fetch", "--registry", unreachable],
        env=client_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert failed.returncode == 1
    assert "js-cookie" in failed.stderr + failed.stdout
    assert "registry" in failed.stderr
    check = subprocess.run(
        [INITFLOW, "graphiql", "check"],
        env=client_environment(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 1
    assert "1 of 7 missing" in check.stdout


def test_graphiql_runs_in_a_browser_that_cannot_reach_the_internet(
    tmp_path: Path, graphiql_assets: Path
) -> None:
    """Chromium with every request off this server refused: the IDE renders and answers."""
    chromium = Path("/usr/bin/chromium")
    assert chromium.exists(), f"{chromium} is not installed: apt-get install chromium"
    data_dir = tmp_path / "data"
    shutil.copytree(graphiql_assets, data_dir / "graphiql")
    service = ServiceProcess(data_dir=data_dir, log_dir=tmp_path / "logs", label="serve")
    service.start()
    try:
        service.wait_ready()
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium), args=["--headless", "--no-sandbox"]
            )
            page = browser.new_page()
            refused: list[str] = []

            def only_this_server(route: Any) -> None:
                if route.request.url.startswith(service.base_url):
                    route.continue_()
                else:
                    refused.append(route.request.url)
                    route.abort()

            page.route("**/*", only_this_server)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(f"{service.base_url}/graphql?q=%7B__typename%7D")
            page.wait_for_selector(".graphiql-editor", timeout=20_000)
            page.get_by_role("button", name=re.compile("execute", re.I)).first.click()
            result = page.locator(".result-window")
            result.get_by_text('"__typename"').wait_for(timeout=20_000)
            browser.close()
        assert refused == []
        assert errors == []
    except BaseException:
        print(service.describe())
        raise
    finally:
        service.kill()
