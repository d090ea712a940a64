"""Read-only git over HTTP ("dumb" protocol) for the service's repositories.

``git clone <cloneUrl>`` works with the owner's token, either as
``-c http.extraHeader="Authorization: Bearer <token>"`` or as the password of
basic auth. Another user's repository is 404, like a missing one.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from uuid import UUID

from aiohttp import web

from initflow.errors import Unauthenticated
from initflow.models import Project
from initflow.services.auth import authenticate, parse_authorization


def _token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:].strip()).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return parse_authorization(header)


def git_routes(repositories_dir: Path) -> list[web.RouteDef]:
    root = repositories_dir.resolve()

    async def serve(request: web.Request) -> web.StreamResponse:
        try:
            user = await authenticate(_token(request))
        except Unauthenticated:
            raise web.HTTPUnauthorized(
                headers={"WWW-Authenticate": 'Basic realm="initflow"'}
            ) from None
        try:
            project_id = UUID(request.match_info["project"])
        except ValueError:
            raise web.HTTPNotFound() from None
        if not await Project.filter(id=project_id, owner_id=user.id).exists():
            raise web.HTTPNotFound()
        repo = (root / f"{project_id}.git").resolve()
        target = (repo / request.match_info["path"]).resolve()
        if not target.is_relative_to(repo) or not target.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(target, headers={"Cache-Control": "no-cache"})

    return [web.get(r"/git/{project}.git/{path:.+}", serve)]
