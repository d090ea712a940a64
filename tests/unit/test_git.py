"""Git service: bare repositories, reproducible commits, compare-and-swap branches, cloning."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from initflow.services.git import (
    CommitIdentity,
    GitError,
    commit_directory,
    commit_parent,
    ensure_bare_repository,
    list_commits,
    read_branch,
    update_branch,
)

AiohttpServer = Callable[[web.Application], Awaitable[TestServer]]

IDENTITY = CommitIdentity(
    name="initflow",
    email="initflow@example.invalid",
    timestamp=datetime(2024, 5, 1, 12, tzinfo=UTC),
)


def write_files(root: Path, files: dict[str, str]) -> Path:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


def files_of(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


async def run_git(*args: str, cwd: Path | None = None) -> str:
    """A user-side git command (clone, show), isolated from this machine's config and proxies."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env = {k: v for k, v in env.items() if "proxy" not in k.lower()}
    env.update({"GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "NO_PROXY": "*"})
    process = await asyncio.create_subprocess_exec(
        "git",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


@pytest.fixture
async def repo(tmp_path: Path) -> Path:
    path = tmp_path / "srv" / "repo.git"
    await ensure_bare_repository(path)
    return path


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return write_files(
        tmp_path / "project",
        {"README.md": "# Demo\n", "app/main.py": "print('hi')\n", ".gitignore": "*.log\n"},
    )


async def test_ensure_bare_repository_creates_once_and_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "demo.git"
    assert await ensure_bare_repository(path) is True
    assert await ensure_bare_repository(path) is False
    assert (path / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (path / "info" / "refs").is_file()
    assert (await run_git("--git-dir", str(path), "config", "http.receivepack")).strip() == "false"
    assert await read_branch(path) is None
    assert await list_commits(path) == []


async def test_commit_directory_gives_the_same_sha_for_the_same_inputs(
    tmp_path: Path, repo: Path, project: Path
) -> None:
    first = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    again = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    other_repo = tmp_path / "other.git"
    await ensure_bare_repository(other_repo)
    elsewhere = await commit_directory(other_repo, project, message="Initial", identity=IDENTITY)
    assert len(first) == 40
    assert first == again == elsewhere


async def test_commit_directory_sha_changes_with_content_time_and_message(
    repo: Path, project: Path
) -> None:
    base = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    later = CommitIdentity(IDENTITY.name, IDENTITY.email, IDENTITY.timestamp + timedelta(seconds=1))
    assert await commit_directory(repo, project, message="Initial", identity=later) != base
    assert await commit_directory(repo, project, message="Other", identity=IDENTITY) != base
    (project / "README.md").write_text("# Changed\n")
    assert await commit_directory(repo, project, message="Initial", identity=IDENTITY) != base


async def test_the_same_instant_in_another_timezone_gives_the_same_sha(
    repo: Path, project: Path
) -> None:
    shifted = IDENTITY.timestamp.astimezone(timezone(timedelta(hours=2)))
    local = CommitIdentity(IDENTITY.name, IDENTITY.email, shifted)
    assert await commit_directory(
        repo, project, message="m", identity=local
    ) == await commit_directory(repo, project, message="m", identity=IDENTITY)


def test_a_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CommitIdentity("a", "a@example.invalid", datetime(2024, 1, 1))


async def test_commit_records_identity_date_and_every_file_even_ignored_ones(
    tmp_path: Path, repo: Path, project: Path
) -> None:
    (project / "debug.log").write_text("ignored by .gitignore, committed anyway\n")
    sha = await commit_directory(repo, project, message="Initial\n\n", identity=IDENTITY)
    log = await run_git("--git-dir", str(repo), "log", "-1", "--format=%an|%ae|%at|%cn|%ct|%B", sha)
    assert log == "initflow|initflow@example.invalid|1714564800|initflow|1714564800|Initial\n\n"
    listing = await run_git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", sha)
    assert listing.split() == [".gitignore", "README.md", "app/main.py", "debug.log"]


async def test_commit_into_a_subdirectory_keeps_the_parents_files(
    tmp_path: Path, repo: Path, project: Path
) -> None:
    root = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    overlay = write_files(
        tmp_path / "overlay",
        {"kustomization.yaml": "resources: []\n", "patches/replicas.yaml": "replicas: 2\n"},
    )
    child = await commit_directory(
        repo,
        overlay,
        message="Add staging",
        identity=IDENTITY,
        parent=root,
        subdirectory="deploy/overlays/staging",
    )
    assert await commit_parent(repo, child) == root
    assert await commit_parent(repo, root) is None
    listing = await run_git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", child)
    assert listing.split() == [
        ".gitignore",
        "README.md",
        "app/main.py",
        "deploy/overlays/staging/kustomization.yaml",
        "deploy/overlays/staging/patches/replicas.yaml",
    ]
    again = await commit_directory(
        repo,
        overlay,
        message="Add staging",
        identity=IDENTITY,
        parent=root,
        subdirectory="deploy/overlays/staging/",
    )
    assert again == child


async def test_a_subdirectory_commit_replaces_same_paths_and_keeps_siblings(
    tmp_path: Path, repo: Path
) -> None:
    base = write_files(tmp_path / "base", {"docs/a.md": "old a\n", "docs/b.md": "b\n", "x": "x\n"})
    root = await commit_directory(repo, base, message="Base", identity=IDENTITY)
    update = write_files(tmp_path / "update", {"a.md": "new a\n", "c.md": "c\n"})
    sha = await commit_directory(
        repo, update, message="Docs", identity=IDENTITY, parent=root, subdirectory="docs"
    )
    show = await run_git("--git-dir", str(repo), "show", f"{sha}:docs/a.md")
    assert show == "new a\n"
    listing = await run_git("--git-dir", str(repo), "ls-tree", "-r", "--name-only", sha)
    assert listing.split() == ["docs/a.md", "docs/b.md", "docs/c.md", "x"]


async def test_subdirectory_must_stay_inside_the_repository(repo: Path, project: Path) -> None:
    for bad in ("../escape", "a/../../b", ".git/hooks", ""):
        with pytest.raises(GitError, match="plain relative path"):
            await commit_directory(repo, project, message="m", identity=IDENTITY, subdirectory=bad)


async def test_update_branch_is_a_compare_and_swap(repo: Path, project: Path) -> None:
    first = await commit_directory(repo, project, message="One", identity=IDENTITY)
    (project / "README.md").write_text("# Two\n")
    second = await commit_directory(repo, project, message="Two", identity=IDENTITY, parent=first)

    assert await update_branch(repo, "main", first, None) is True
    assert await update_branch(repo, "main", first, None) is True  # retried: already there
    assert await read_branch(repo) == first

    with pytest.raises(GitError) as raised:
        await update_branch(repo, "main", second, second)  # it is at first
    assert raised.value.code == "GIT_FAILED"
    assert await read_branch(repo) == first

    assert await update_branch(repo, "main", second, first) is True
    assert await update_branch(repo, "main", second, first) is True  # idempotent
    assert await list_commits(repo) == [second, first]

    with pytest.raises(GitError) as conflict:
        await update_branch(repo, "main", first, None)
    assert "Branch 'main'" in conflict.value.message
    assert conflict.value.detail  # git's own words live in detail, not in the message
    assert conflict.value.detail not in conflict.value.message
    assert await read_branch(repo) == second
    assert (repo / "info" / "refs").read_text() == f"{second}\trefs/heads/main\n"


async def test_invalid_branch_names_and_object_ids_are_refused(repo: Path) -> None:
    with pytest.raises(GitError, match="not a valid branch name"):
        await read_branch(repo, "bad..name")
    with pytest.raises(GitError, match="object id"):
        await commit_parent(repo, "--all")
    with pytest.raises(GitError) as raised:
        await commit_parent(repo, "f" * 40)
    assert raised.value.detail


async def test_cloning_the_bare_repository_by_path_yields_the_files(
    tmp_path: Path, repo: Path, project: Path
) -> None:
    sha = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    await update_branch(repo, "main", sha, None)
    await run_git("clone", "--quiet", str(repo), str(tmp_path / "clone"))
    assert files_of(tmp_path / "clone") == files_of(project)
    head = await run_git("rev-parse", "HEAD", cwd=tmp_path / "clone")
    assert head.strip() == sha


async def test_the_bare_repository_can_be_cloned_over_dumb_http(
    tmp_path: Path, repo: Path, project: Path, aiohttp_server: AiohttpServer
) -> None:
    root = await commit_directory(repo, project, message="Initial", identity=IDENTITY)
    await update_branch(repo, "main", root, None)
    overlay = write_files(tmp_path / "overlay", {"kustomization.yaml": "resources: []\n"})
    child = await commit_directory(
        repo, overlay, message="Staging", identity=IDENTITY, parent=root, subdirectory="deploy"
    )
    await update_branch(repo, "main", child, root)

    app = web.Application()
    app.router.add_static("/", repo.parent)  # plain static files, no git on the server
    server = await aiohttp_server(app)
    url = f"http://127.0.0.1:{server.port}/{repo.name}"

    clone = tmp_path / "http-clone"
    await run_git("clone", "--quiet", url, str(clone))
    assert files_of(clone) == {**files_of(project), "deploy/kustomization.yaml": "resources: []\n"}
    log = await run_git("log", "--format=%H", cwd=clone)
    assert log.split() == [child, root]
