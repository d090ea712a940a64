"""Third-party browser assets the service can serve itself: the GraphiQL playground's.

Strawberry's GraphiQL page loads seven files from unpkg.com (React, ReactDOM, js-cookie,
GraphiQL's CSS and JS, the explorer plugin's CSS and JS), each pinned to a version and
guarded by a Subresource Integrity hash. Without internet the page stays on "Loading…".

``initflow graphiql fetch`` downloads exactly those package versions from the npm
registry, checks each tarball against the registry's ``dist.integrity`` (sha512) and each
extracted file against the page's own ``integrity`` attribute, and writes the files under
``$INITFLOW_DATA_DIR/graphiql/<package>@<version>/<path>`` — the unpkg URL path, so the
page only needs its URL prefix rewritten. The bytes are the published ones, so the page's
integrity hashes still hold. Nothing third-party is ever written into the repository.

The list of assets is read from Strawberry's page itself (``ide_assets``), so upgrading
Strawberry upgrades the assets: ``fetch`` again after an upgrade.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import gzip
import hashlib
import io
import json
import os
import re
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from initflow import __version__
from initflow.errors import InitflowError

CDN_PREFIX = "https://unpkg.com/"
DEFAULT_REGISTRY = "https://registry.npmjs.org"
ASSETS_SUBDIR = "graphiql"
MAX_TARBALL_BYTES = 64 * 1024 * 1024
HTTP_TIMEOUT_SECONDS = 60.0
# The strongest algorithm present in an integrity attribute is the one that counts (SRI).
_ALGORITHMS = {"sha256": 1, "sha384": 2, "sha512": 3}
_CDN_URL = re.compile(r"^https://unpkg\.com/((?:@[^/@]+/)?[^/@]+)@([^/]+)/(.+)$")


class AssetFetchError(InitflowError):
    """The GraphiQL assets could not be fetched."""

    code = "ASSET_FETCH_FAILED"


@dataclass(frozen=True)
class Asset:
    """One file the IDE page loads: ``<package>@<version>/<path>`` with its SRI hash."""

    url: str
    package: str
    version: str
    path: str
    integrity: str

    @property
    def relative(self) -> str:
        """Where it lives under the assets directory, and its URL under the asset route."""
        return f"{self.package}@{self.version}/{self.path}"

    @property
    def content_type(self) -> str:
        if self.path.endswith(".css"):
            return "text/css"
        if self.path.endswith(".js"):
            return "text/javascript"
        return "application/octet-stream"


class _AssetTags(HTMLParser):
    """Collects ``src``/``href`` + ``integrity`` of ``<script>`` and ``<link>`` tags."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("script", "link"):
            return
        values = dict(attrs)
        url = values.get("src") if tag == "script" else values.get("href")
        if url:
            self.found.append((url, values.get("integrity")))


def ide_page_html() -> str:
    """Strawberry's GraphiQL page, the one its view serves (read, never modified on disk)."""
    from strawberry.http.ides import get_graphql_ide_html  # noqa: PLC0415 (a data file)

    return get_graphql_ide_html("graphiql")


def ide_assets(html: str) -> tuple[Asset, ...]:
    """Every CDN asset of the page, in page order; each must carry an integrity hash."""
    parser = _AssetTags()
    parser.feed(html)
    assets: list[Asset] = []
    for url, integrity in parser.found:
        match = _CDN_URL.match(url)
        if match is None:
            continue
        if not integrity:
            raise AssetFetchError(f"{url} has no integrity attribute; refusing to pin it")
        package, version, path = match.groups()
        assets.append(Asset(url, package, version, path, integrity))
    return tuple(assets)


def assets_dir(data_dir: Path) -> Path:
    return data_dir / ASSETS_SUBDIR


def integrity_matches(data: bytes, integrity: str) -> bool:
    """Subresource Integrity check: any hash of the strongest algorithm listed matches."""
    expected: dict[str, set[str]] = {}
    for token in integrity.split():
        algorithm, _, digest = token.partition("-")
        digest = digest.split("?", 1)[0]
        if algorithm in _ALGORITHMS and digest:
            expected.setdefault(algorithm, set()).add(digest)
    if not expected:
        return False
    strongest = max(expected, key=_ALGORITHMS.__getitem__)
    actual = base64.b64encode(hashlib.new(strongest, data).digest()).decode()
    return actual in expected[strongest]


def verified(root: Path, asset: Asset) -> bool:
    """The asset's file exists under ``root`` with exactly the bytes the page expects."""
    path = root / asset.relative
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return integrity_matches(data, asset.integrity)


def missing_assets(root: Path, assets: Iterable[Asset]) -> list[Asset]:
    return [asset for asset in assets if not verified(root, asset)]


# --- fetching -------------------------------------------------------------------------------

Opener = Callable[[str], bytes]


def _http_get(url: str) -> bytes:
    request = urllib.request.Request(
        url, headers={"User-Agent": f"initflow/{__version__}", "Accept": "*/*"}
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            data: bytes = response.read(MAX_TARBALL_BYTES + 1)
    except urllib.error.HTTPError as exc:
        raise AssetFetchError(f"GET {url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AssetFetchError(f"GET {url}: {reason}") from exc
    if len(data) > MAX_TARBALL_BYTES:
        raise AssetFetchError(f"GET {url}: larger than {MAX_TARBALL_BYTES} bytes")
    return data


def _metadata_url(registry: str, package: str, version: str) -> str:
    return f"{registry.rstrip('/')}/{urllib.parse.quote(package, safe='@')}/{version}"


def _tarball(registry: str, package: str, version: str, opener: Opener) -> bytes:
    """The package tarball, checked against the registry's sha512 ``dist.integrity``."""
    metadata_url = _metadata_url(registry, package, version)
    try:
        metadata: dict[str, Any] = json.loads(opener(metadata_url))
        dist = metadata["dist"]
        tarball_url = str(dist["tarball"])
        integrity = str(dist["integrity"])
    except (ValueError, KeyError, TypeError) as exc:
        raise AssetFetchError(f"{metadata_url}: no dist.tarball/dist.integrity") from exc
    if not integrity.startswith("sha512-"):
        raise AssetFetchError(f"{package}@{version}: registry integrity is not sha512")
    data = opener(tarball_url)
    if not integrity_matches(data, integrity):
        raise AssetFetchError(
            f"{tarball_url}: sha512 does not match the registry's dist.integrity {integrity}"
        )
    return data


def _members(tarball: bytes, wanted: set[str]) -> dict[str, bytes]:
    """The wanted files (paths inside the package) of an npm tarball (``package/…``)."""
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(tarball)), mode="r:") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                # npm packs under "package/", a few old packages under another top folder.
                _, _, inner = member.name.partition("/")
                if inner in wanted and inner not in found:
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        found[inner] = extracted.read()
    except (OSError, EOFError, tarfile.TarError) as exc:
        raise AssetFetchError(f"unreadable tarball: {exc}") from exc
    return found


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class FetchResult:
    fetched: tuple[Asset, ...]
    already_present: tuple[Asset, ...]


def fetch_assets(
    assets: Iterable[Asset],
    root: Path,
    *,
    registry: str = DEFAULT_REGISTRY,
    force: bool = False,
    opener: Opener = _http_get,
    progress: Callable[[str], None] = lambda _: None,
) -> FetchResult:
    """Download the packages of ``assets`` and write their files under ``root``.

    A file already present with the right hash is kept (unless ``force``); a package is
    downloaded only if one of its files is missing. Every file written matches the page's
    integrity hash, so a half-finished or tampered download never gets served.
    """
    wanted = list(assets)
    present = [] if force else [a for a in wanted if verified(root, a)]
    todo = [a for a in wanted if a not in present]
    by_package: dict[tuple[str, str], list[Asset]] = {}
    for asset in todo:
        by_package.setdefault((asset.package, asset.version), []).append(asset)
    for (package, version), files in by_package.items():
        progress(f"{package}@{version}: downloading from {registry}")
        tarball = _tarball(registry, package, version, opener)
        contents = _members(tarball, {a.path for a in files})
        for asset in files:
            data = contents.get(asset.path)
            if data is None:
                raise AssetFetchError(f"{package}@{version} has no file {asset.path}")
            if not integrity_matches(data, asset.integrity):
                raise AssetFetchError(
                    f"{asset.relative}: bytes do not match the page's integrity {asset.integrity}"
                )
            _write_atomically(root / asset.relative, data)
            progress(f"  {asset.relative} ({len(data):,} bytes, integrity ok)")
    return FetchResult(fetched=tuple(todo), already_present=tuple(present))


# --- the command ----------------------------------------------------------------------------


def cmd_graphiql_fetch(args: argparse.Namespace) -> int:
    from initflow.settings import Settings  # noqa: PLC0415 (the CLI's own settings)

    root = assets_dir(Settings.from_env().data_dir)
    try:
        assets = ide_assets(ide_page_html())
        result = fetch_assets(
            assets,
            root,
            registry=args.registry,
            force=args.force,
            progress=lambda line: print(line, flush=True),
        )
    except AssetFetchError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        print(
            "The npm registry must be reachable from this machine (or pass --registry with a"
            " mirror). Without network here: run the fetch elsewhere with INITFLOW_DATA_DIR"
            f" pointing to a scratch folder, then copy its {ASSETS_SUBDIR}/ folder into this"
            " service's data dir.",
            file=sys.stderr,
        )
        return 1
    if result.already_present and not result.fetched:
        print(f"all {len(assets)} GraphiQL assets already present and verified in {root}")
    else:
        print(f"{len(assets)} GraphiQL assets ready in {root}; reload /graphql in the browser")
    return 0


def cmd_graphiql_check(args: argparse.Namespace) -> int:
    from initflow.settings import Settings  # noqa: PLC0415 (the CLI's own settings)

    root = assets_dir(Settings.from_env().data_dir)
    assets = ide_assets(ide_page_html())
    missing = missing_assets(root, assets)
    for asset in assets:
        state = "missing or altered" if asset in missing else "ok"
        print(f"{state:>18}  {asset.relative}")
    if missing:
        print(f"{len(missing)} of {len(assets)} missing in {root}: run `initflow graphiql fetch`")
        return 1
    print(f"all {len(assets)} GraphiQL assets present and verified in {root}")
    return 0


def add_graphiql_commands(commands: Any) -> None:
    graphiql = commands.add_parser(
        "graphiql",
        help="the GraphQL playground's browser assets (for machines without internet)",
        description=(
            "The playground at /graphql loads React and GraphiQL from unpkg.com. `fetch`"
            " downloads those exact files from the npm registry into $INITFLOW_DATA_DIR/"
            f"{ASSETS_SUBDIR}/, and the service then serves them itself."
        ),
    ).add_subparsers(dest="graphiql_command", required=True)
    fetch = graphiql.add_parser(
        "fetch", help="download the playground's assets from the npm registry into the data dir"
    )
    fetch.add_argument(
        "--registry",
        default=DEFAULT_REGISTRY,
        help=f"npm registry or mirror (default {DEFAULT_REGISTRY})",
    )
    fetch.add_argument(
        "--force", action="store_true", help="download again even if the files are present"
    )
    fetch.set_defaults(func=cmd_graphiql_fetch)
    check = graphiql.add_parser("check", help="verify the assets in the data dir (exit 1 if not)")
    check.set_defaults(func=cmd_graphiql_check)
