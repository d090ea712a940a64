"""The dashboard: one HTML page and its static files, a client of the public GraphQL API.

``/``, ``/projects/new`` and ``/projects/{id}`` all serve ``index.html``; the page's
scripts route on the URL, so a project page is a stable deep link. The HTML is never
cached (a new release is picked up at once) and carries a strict Content-Security-Policy:
same-origin scripts, styles and sockets only, no inline script, no framing. Static files
are revalidated on every load (``no-cache`` + Last-Modified): there is no build step and
so no fingerprinted names to cache forever.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

STATIC_DIR = Path(__file__).resolve().parent / "static"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self' ws: wss:",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

_COMMON_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

# Served with an explicit type: the platform's mimetypes table may lack one (or map
# JavaScript to text/plain), and module scripts are refused under a wrong type.
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


def _content_type(path: Path) -> str:
    known = _CONTENT_TYPES.get(path.suffix)
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or "application/octet-stream"


def dashboard_routes(static_dir: Path = STATIC_DIR) -> list[web.RouteDef]:
    root = static_dir.resolve()
    index = root / "index.html"

    async def page(_: web.Request) -> web.StreamResponse:
        return web.FileResponse(
            index,
            headers={
                **_COMMON_HEADERS,
                "Content-Type": _content_type(index),
                "Cache-Control": "no-cache, no-store, must-revalidate",
                "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                "X-Frame-Options": "DENY",
            },
        )

    async def static(request: web.Request) -> web.StreamResponse:
        relative = request.match_info["path"]
        target = (root / relative).resolve()
        # Resolving first, then checking containment, refuses "..", absolute parts and
        # symlinks that point out of the directory alike.
        if not target.is_relative_to(root) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(
            target,
            headers={
                **_COMMON_HEADERS,
                "Content-Type": _content_type(target),
                "Cache-Control": "no-cache",
            },
        )

    return [
        web.get("/", page),
        web.get("/projects/new", page),
        web.get(r"/projects/{id:[^/]+}", page),
        web.get(r"/static/{path:.+}", static),
    ]
