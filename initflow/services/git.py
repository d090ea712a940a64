"""Bare repositories and deterministic commits through the ``git`` CLI.

Commits are built with plumbing (a throwaway index, ``write-tree``, ``commit-tree``) and every
input of the commit object is pinned, so a retried step recreates the very same SHA. Branches
move only by compare-and-swap, which makes publishing a commit idempotent. Repositories are
kept servable over "dumb HTTP" (plain static files) by refreshing ``info/refs``.

git runs from a thread pool, not through the event loop's subprocess API: under
uvloop that forks the whole interpreter on the loop (≈ 8.5 ms of a ~100 MB worker
blocked per command, measured), while ``subprocess.Popen`` in a thread spawns with
vfork/posix_spawn and blocks nothing; other runs' commits and events wait less.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final

from initflow.errors import PermanentStepError

_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_DETAIL_LIMIT: Final = 4000
_GIT_THREADS: Final = ThreadPoolExecutor(max_workers=16, thread_name_prefix="git")


class GitError(PermanentStepError):
    """A git command failed."""

    code = "GIT_FAILED"

    def __init__(
        self, message: str | None = None, *, detail: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        # git's own stderr: for logs and operators, not for the message shown to users.
        self.detail = detail


@dataclass(frozen=True)
class CommitIdentity:
    """Author and committer of a commit, with the timestamp that makes its SHA reproducible."""

    name: str
    email: str
    timestamp: datetime

    def __post_init__(self) -> None:
        if self.timestamp.tzinfo is None or self.timestamp.utcoffset() is None:
            raise ValueError("CommitIdentity.timestamp must be timezone-aware")

    @property
    def git_date(self) -> str:
        return f"@{int(self.timestamp.timestamp())} +0000"


@dataclass(frozen=True)
class _Result:
    returncode: int
    stdout: bytes
    stderr: bytes


def _environment(home: Path, extra: Mapping[str, str] | None) -> dict[str, str]:
    """The caller's environment minus anything that could change what git does."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(
        {
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "HOME": str(home),
            "GIT_TERMINAL_PROMPT": "0",
            "LC_ALL": "C",
            "LANGUAGE": "C",
        }
    )
    if extra:
        env.update(extra)
    return env


async def _git(
    args: Sequence[str],
    *,
    git_dir: Path | None,
    env: Mapping[str, str] | None = None,
    stdin: bytes | None = None,
    check: bool = True,
    cwd: Path | None = None,
) -> _Result:
    """Run one git command (no shell). ``check`` raises GitError on a non-zero exit."""
    # HOME only has to be harmless: global and system config are switched off anyway.
    full_env = _environment(git_dir or Path(tempfile.gettempdir()), env)
    if git_dir is not None:
        full_env["GIT_DIR"] = str(git_dir)
    loop = asyncio.get_running_loop()
    try:
        process = await loop.run_in_executor(
            _GIT_THREADS,
            lambda: subprocess.Popen(
                ["git", *args],
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=full_env,
                cwd=cwd,
            ),
        )
    except FileNotFoundError as exc:
        raise GitError("git is not installed or not on PATH.", detail=str(exc)) from exc
    try:
        stdout, stderr = await loop.run_in_executor(_GIT_THREADS, process.communicate, stdin)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await asyncio.shield(loop.run_in_executor(_GIT_THREADS, process.wait))
        raise
    assert process.returncode is not None
    result = _Result(process.returncode, stdout, stderr)
    if check and result.returncode != 0:
        raise _failure(args, result)
    return result


def _failure(args: Sequence[str], result: _Result, message: str | None = None) -> GitError:
    detail = result.stderr.decode("utf-8", "replace").strip()[-_DETAIL_LIMIT:]
    return GitError(
        message or f"git {args[0]} failed (exit status {result.returncode}).", detail=detail
    )


def _text(result: _Result) -> str:
    return result.stdout.decode("utf-8", "replace").strip()


def _check_sha(value: str, what: str) -> str:
    if not _SHA.fullmatch(value):
        raise GitError(f"{what} must be a full lowercase hexadecimal object id, got {value!r}.")
    return value


_valid_branches: set[str] = set()


async def _branch_ref(branch: str) -> str:
    """``refs/heads/<branch>``, refusing names git would refuse (or read as options)."""
    ref = f"refs/heads/{branch}"
    if branch not in _valid_branches:
        result = await _git(["check-ref-format", ref], git_dir=None, check=False)
        if result.returncode != 0 or branch.startswith("-"):
            raise GitError(f"{branch!r} is not a valid branch name.")
        _valid_branches.add(branch)
    return ref


async def ensure_bare_repository(path: Path, default_branch: str = "main") -> bool:
    """Create a bare repository at ``path`` unless one is there; True if it was created.

    Either way the repository ends up with pushes over HTTP disabled and fresh dumb-HTTP
    metadata, so a crash between steps is repaired by calling this again.
    """
    await _branch_ref(default_branch)
    created = not (path / "HEAD").is_file()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        await _git(
            ["init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path)],
            git_dir=None,
        )
    is_bare = await _git(["rev-parse", "--is-bare-repository"], git_dir=path)
    if _text(is_bare) != "true":
        raise GitError(f"{path} exists but is not a bare git repository.")
    await _git(["config", "http.receivepack", "false"], git_dir=path)
    await _git(["update-server-info"], git_dir=path)
    return created


async def _tree_of_directory(repo: Path, source: Path, index: Path) -> str:
    """Write the tree of every file under ``source`` (ignore rules do not apply)."""
    env = {"GIT_INDEX_FILE": str(index), "GIT_WORK_TREE": str(source)}
    await _git(["add", "--all", "--force", "--", "."], git_dir=repo, env=env, cwd=source)
    return _text(await _git(["write-tree"], git_dir=repo, env=env))


async def _overlay_tree(repo: Path, base: str | None, tree: str, prefix: str, index: Path) -> str:
    """``base``'s tree with the files of ``tree`` placed under ``prefix``, replacing same paths."""
    env = {"GIT_INDEX_FILE": str(index)}
    if base is not None:
        await _git(["read-tree", f"{base}^{{tree}}"], git_dir=repo, env=env)
    listing = await _git(["ls-tree", "-r", "-z", "--full-tree", tree], git_dir=repo)
    entries = bytearray()
    for record in listing.stdout.split(b"\0"):
        if record:
            info, _, name = record.partition(b"\t")
            entries += info + b"\t" + prefix.encode("utf-8") + b"/" + name + b"\0"
    await _git(
        ["update-index", "--replace", "-z", "--index-info"],
        git_dir=repo,
        env=env,
        stdin=bytes(entries),
    )
    return _text(await _git(["write-tree"], git_dir=repo, env=env))


def _normalized_subdirectory(subdirectory: str) -> str:
    parts = subdirectory.strip("/").split("/")
    if any(part in ("", ".", "..") or part.lower() == ".git" for part in parts) or (
        "\\" in subdirectory
    ):
        raise GitError(f"Subdirectory {subdirectory!r} must be a plain relative path.")
    return "/".join(parts)


async def commit_directory(
    repo: Path,
    source: Path,
    *,
    message: str,
    identity: CommitIdentity,
    branch: str = "main",
    parent: str | None = None,
    subdirectory: str | None = None,
) -> str:
    """Commit the files under ``source`` and return the SHA; the branch is not moved.

    With ``subdirectory`` the files land under that prefix on top of ``parent``'s tree (other
    files of the parent are kept, same paths are replaced); without it the commit's tree is
    exactly ``source``. Same inputs give the same SHA. ``branch`` only names the intent: use
    :func:`update_branch` to publish.
    """
    await _branch_ref(branch)
    if parent is not None:
        _check_sha(parent, "parent")
    prefix = _normalized_subdirectory(subdirectory) if subdirectory is not None else None
    if not await asyncio.to_thread(source.is_dir):
        raise GitError(f"Cannot commit {source}: it is not a directory.")
    scratch = Path(tempfile.mkdtemp(prefix="initflow-git-"))
    try:
        tree = await _tree_of_directory(repo, source, scratch / "source.index")
        if prefix is not None:
            tree = await _overlay_tree(repo, parent, tree, prefix, scratch / "merged.index")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    date = identity.git_date
    env = {
        "GIT_AUTHOR_NAME": identity.name,
        "GIT_AUTHOR_EMAIL": identity.email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_NAME": identity.name,
        "GIT_COMMITTER_EMAIL": identity.email,
        "GIT_COMMITTER_DATE": date,
    }
    args = ["commit-tree", "--no-gpg-sign", tree]
    if parent is not None:
        args += ["-p", parent]
    body = message.rstrip("\n") + "\n"
    result = await _git(args, git_dir=repo, env=env, stdin=body.encode("utf-8"))
    return _text(result)


async def read_branch(repo: Path, branch: str = "main") -> str | None:
    """The commit ``branch`` points to, or None if the branch does not exist yet."""
    ref = await _branch_ref(branch)
    args = ["rev-parse", "--quiet", "--verify", f"{ref}^{{commit}}"]
    result = await _git(args, git_dir=repo, check=False)
    if result.returncode == 1:
        return None
    if result.returncode != 0:
        raise _failure(args, result)
    return _text(result)


async def update_branch(repo: Path, branch: str, new: str, expected_old: str | None) -> bool:
    """Move ``branch`` to ``new`` only if it is at ``expected_old`` (None: must not exist).

    Returns True once the branch points to ``new``, including when it already did, so a
    retried step succeeds. Raises GitError when the branch holds anything else.
    """
    ref = await _branch_ref(branch)
    _check_sha(new, "new")
    old = _check_sha(expected_old, "expected_old") if expected_old is not None else "0" * len(new)
    args = ["update-ref", ref, new, old]
    if await read_branch(repo, branch) != new:
        result = await _git(args, git_dir=repo, check=False)
        if result.returncode != 0:
            current = await read_branch(repo, branch)
            if current != new:
                raise _failure(
                    args,
                    result,
                    f"Branch '{branch}' is at {current or 'nothing'}, "
                    f"expected {expected_old or 'nothing'}; refusing to move it to {new}.",
                )
    await _git(["update-server-info"], git_dir=repo)
    return True


async def commit_parent(repo: Path, sha: str) -> str | None:
    """The first parent of commit ``sha``, or None for a root commit."""
    _check_sha(sha, "sha")
    result = await _git(["rev-list", "--parents", "-n", "1", sha], git_dir=repo)
    ids = _text(result).split()
    return ids[1] if len(ids) > 1 else None


async def list_commits(repo: Path, branch: str = "main") -> list[str]:
    """The commits reachable from ``branch``, newest first; empty if it does not exist."""
    head = await read_branch(repo, branch)
    if head is None:
        return []
    result = await _git(["rev-list", "--topo-order", head], git_dir=repo)
    return _text(result).split()
