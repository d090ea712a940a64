"""The GraphQL playground at ``GET /graphql`` that works without internet.

Strawberry's GraphiQL page loads its scripts from unpkg.com. When ``initflow graphiql
fetch`` has put those exact files into ``$INITFLOW_DATA_DIR/graphiql/`` (see
``initflow.assets``), the page is served with its unpkg URLs rewritten to
``graphiql-assets/…`` on this server — same bytes, so its integrity hashes still hold.
When they are missing, a short page says what to run instead of a blank "Loading…"
(``?ide=cdn`` still offers the original page for a browser that can reach unpkg.com).

``INITFLOW_GRAPHQL_IDE=0`` turns the playground off: ``GET /graphql`` for a browser is a
404 and the asset route is not registered. The API itself is unaffected.
"""

from __future__ import annotations

import asyncio
import html
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from initflow.assets import (
    CDN_PREFIX,
    Asset,
    assets_dir,
    ide_assets,
    ide_page_html,
    integrity_matches,
)

log = logging.getLogger("initflow.web")

ASSET_ROUTE = "/graphiql-assets"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass
class Playground:
    """The IDE page, its local assets, and the cache of which asset files are verified."""

    root: Path
    enabled: bool = True
    page: str = field(default_factory=ide_page_html)
    # relative path -> (size, mtime_ns) of a file whose bytes matched the page's hash
    _verified: dict[str, tuple[int, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.assets = ide_assets(self.page)
        self._by_path = {asset.relative: asset for asset in self.assets}

    def local_page(self, base: str) -> str:
        """The page with every unpkg URL pointing to ``base`` (e.g. ``graphiql-assets/``)."""
        page = self.page
        for asset in self.assets:
            page = page.replace(asset.url, base + asset.relative)
        return page

    def _check(self, asset: Asset) -> bool:
        path = self.root / asset.relative
        try:
            stat = path.stat()
        except OSError:
            return False
        key = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(asset.relative) == key:
            return True
        try:
            ok = integrity_matches(path.read_bytes(), asset.integrity)
        except OSError:
            return False
        if ok:
            self._verified[asset.relative] = key
        return ok

    async def missing(self) -> list[Asset]:
        """Assets absent or not byte-identical (hashed once per file version, off the loop)."""
        return await asyncio.to_thread(lambda: [a for a in self.assets if not self._check(a)])

    async def render(self, request: web.Request) -> web.Response:
        if not self.enabled:
            raise web.HTTPNotFound(text="The GraphQL playground is turned off on this server.")
        if request.query.get("ide") == "cdn":
            return _html(self.page)
        missing = await self.missing()
        if missing:
            return _html(
                _missing_page(self.assets, missing),
                {"Content-Security-Policy": HELP_PAGE_POLICY},
            )
        # Relative to /graphql, so a path prefix in front of the service keeps working.
        return _html(self.local_page(ASSET_ROUTE.lstrip("/") + "/"))

    async def serve_asset(self, request: web.Request) -> web.StreamResponse:
        asset = self._by_path.get(request.match_info["path"])
        if asset is None:
            raise web.HTTPNotFound(text="Not a GraphiQL asset.")
        if not await asyncio.to_thread(self._check, asset):
            raise web.HTTPNotFound(
                text="GraphiQL assets are not installed: run `initflow graphiql fetch`."
            )
        response = web.FileResponse(
            self.root / asset.relative,
            headers={
                "Content-Type": asset.content_type,
                # The path carries the package version: its bytes never change.
                "Cache-Control": "public, max-age=31536000, immutable",
                "X-Content-Type-Options": "nosniff",
            },
        )
        return response


PLAYGROUND = web.AppKey("playground", Playground)


# The help page loads nothing and runs nothing; its only style is inline.
HELP_PAGE_POLICY = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'"


def _html(text: str, headers: Mapping[str, str] | None = None) -> web.Response:
    # Never cached: after `initflow graphiql fetch`, a reload must show the playground.
    return web.Response(
        text=text,
        content_type="text/html",
        charset="utf-8",
        headers={"Cache-Control": "no-cache", **(headers or {})},
    )


def _missing_page(assets: tuple[Asset, ...], missing: list[Asset]) -> str:
    items = "\n".join(f"      <li><code>{html.escape(a.relative)}</code></li>" for a in missing)
    return f"""<!doctype html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>GraphiQL: assets not installed</title>
    <style>
      body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 3rem auto;
              padding: 0 1rem; color: #1f2328; }}
      code, pre {{ font-family: ui-monospace, monospace; }}
      pre {{ background: #f6f8fa; padding: .75rem 1rem; border-radius: 6px; }}
      details {{ margin-top: 1.5rem; color: #59636e; }}
    </style>
  </head>
  <body>
    <main>
      <h1>The GraphQL playground is not installed on this server</h1>
      <p>The GraphQL API at this address works (<code>POST /graphql</code> and WebSocket).
      Only the in-browser playground (GraphiQL) is missing: it needs {len(assets)} JavaScript
      and CSS files that this server does not have yet ({len(missing)} missing), and this
      server does not load them from the internet.</p>
      <p><strong>Run <code>initflow graphiql fetch</code> on the server, then reload this
      page.</strong></p>
      <pre>initflow graphiql fetch   # with the same INITFLOW_DATA_DIR as the service</pre>
      <p>It downloads the exact published files from the npm registry into the data
      directory (<code>graphiql/</code>) and checks their hashes; no restart is needed.
      Server without internet access? Run it on a machine that has access, with
      <code>INITFLOW_DATA_DIR</code> pointing to a scratch folder, and copy that folder's
      <code>graphiql/</code> into the service's data directory.</p>
      <p>This browser can reach {html.escape(CDN_PREFIX)}?
      <a href="?ide=cdn">Open the playground with its files from the CDN instead</a>.</p>
      <details>
        <summary>Missing files</summary>
        <ul>
{items}
        </ul>
      </details>
    </main>
  </body>
</html>
"""


def setup_playground(app: web.Application, data_dir: Path, *, enabled: bool) -> None:
    """Attach the playground to ``app`` and add the asset route (unless turned off)."""
    playground = Playground(assets_dir(data_dir), enabled=enabled)
    app[PLAYGROUND] = playground
    if not playground.enabled:
        return
    app.router.add_get(ASSET_ROUTE + "/{path:.+}", playground.serve_asset)

    async def announce(_: web.Application) -> None:
        missing = await playground.missing()  # also verifies (and caches) the present ones
        if missing:
            log.info(
                "GraphQL playground: %d of %d asset files missing in %s; the browser page at"
                " /graphql explains what to do (run `initflow graphiql fetch`)",
                len(missing),
                len(playground.assets),
                playground.root,
            )
        else:
            log.info("GraphQL playground: serving its assets from %s", playground.root)

    app.on_startup.append(announce)


async def render_graphql_ide(request: web.Request) -> web.Response:
    """What ``GET /graphql`` shows a browser; used by the GraphQL view."""
    playground = request.app.get(PLAYGROUND)
    if playground is None:  # an app assembled without setup_playground: Strawberry's page
        return _html(ide_page_html())
    return await playground.render(request)
