"""The few facts a build needs from git, asked of the ``git`` command line.

The git CLI is the reference implementation and is on every build machine; asking it (rather than
re-implementing the index and ignore rules) means "dirty" and "tracked" mean exactly what the user's
own ``git status`` says. Output is requested NUL-separated (``-z``) so no path is ever quoted.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from .errors import SourceError

_COMMIT_RE = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")
_SCP_RE = re.compile(r"(?:[^@/]+@)?([^:/]+):(?!//)(.+)")
MAX_DIRTY_SHOWN = 10


@dataclass(frozen=True)
class RepoState:
    root: Path
    commit: str
    commit_time: int
    """Committer time of HEAD, Unix seconds."""
    dirty_paths: tuple[str, ...]
    source_url: str | None
    """The ``origin`` remote as a credential-free https URL; None when absent or a local path."""
    branch: str | None = None
    """The branch HEAD is on (``main``); None for a detached HEAD."""
    author_email: str | None = None
    """The commit author's e-mail address, for separation of duties at the gate."""
    author_name: str | None = None

    @property
    def dirty(self) -> bool:
        return bool(self.dirty_paths)


def git_env() -> dict[str, str]:
    """The environment for git: no prompts, no pager, untranslated messages."""
    env = dict(os.environ)
    env.update(LC_ALL="C", GIT_TERMINAL_PROMPT="0", GIT_PAGER="cat")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE"):
        env.pop(name, None)
    return env


def run_git(cwd: Path, *args: str) -> bytes:
    """Run ``git ARGS`` in ``cwd``; a failure becomes a :class:`SourceError` with git's words."""
    try:
        done = subprocess.run(  # noqa: S603 - fixed program, arguments are not a shell line
            ["git", "--no-optional-locks", *args],  # noqa: S607 - git is found on PATH on purpose
            cwd=cwd,
            env=git_env(),
            capture_output=True,
            check=False,
        )
    except FileNotFoundError as exc:
        raise SourceError("git is not installed (immutrail build needs the git command)") from exc
    if done.returncode != 0:
        message = done.stderr.decode("utf-8", "replace").strip()
        raise SourceError(f"git {args[0]} failed in {cwd}: {message}")
    return done.stdout


def find_root(path: Path) -> Path:
    """The top of the work tree that holds ``path`` (a folder)."""
    if not path.is_dir():
        raise SourceError(f"{path} is not a folder")
    try:
        out = run_git(path, "rev-parse", "--show-toplevel")
    except SourceError as exc:
        raise SourceError(f"{path} is not inside a git repository: {exc}") from exc
    return Path(os.fsdecode(out.rstrip(b"\n")))


def inspect(root: Path) -> RepoState:
    """HEAD's commit and time, the paths that differ from it, and the origin URL."""
    try:
        commit = run_git(root, "rev-parse", "--verify", "HEAD^{commit}").decode().strip()
    except SourceError as exc:
        raise SourceError(f"{root} has no commit yet: commit the definition first") from exc
    if not _COMMIT_RE.fullmatch(commit):
        raise SourceError(f"unexpected commit id {commit!r} from git")
    stamp, author_email, author_name = (
        run_git(root, "log", "-1", "--format=%ct%x00%ae%x00%an", commit)
        .decode("utf-8", "replace")
        .strip()
        .split("\0")
    )
    status = run_git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    return RepoState(
        root=root,
        commit=commit,
        commit_time=int(stamp),
        dirty_paths=_status_paths(status),
        source_url=_origin(root),
        branch=_branch(root),
        author_email=author_email or None,
        author_name=author_name or None,
    )


def _branch(root: Path) -> str | None:
    try:
        ref = run_git(root, "symbolic-ref", "-q", "HEAD").decode().strip()
    except SourceError:  # detached HEAD: built from a commit that no branch names here
        return None
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None


def _status_paths(status: bytes) -> tuple[str, ...]:
    records = [r for r in status.split(b"\0") if r]
    paths: list[str] = []
    skip_next = False
    for record in records:
        if skip_next:  # the original path of a rename or copy
            skip_next = False
            continue
        code, path = record[:2], record[3:]
        skip_next = code[:1] in (b"R", b"C")
        paths.append(os.fsdecode(path))
    return tuple(paths)


def _origin(root: Path) -> str | None:
    try:
        url = run_git(root, "remote", "get-url", "origin").decode("utf-8", "replace").strip()
    except SourceError:
        return None
    return public_url(url)


def public_url(url: str) -> str | None:
    """An https URL without credentials or ``.git``; None for local paths, which vary per machine.

    ``git@github.com:org/app.git``, ``ssh://git@github.com/org/app`` and
    ``https://token@github.com/org/app.git`` all become ``https://github.com/org/app``: clones of
    one repository over different protocols then build the same image digest.
    """
    scp = _SCP_RE.fullmatch(url)
    if scp and "://" not in url:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ssh", "git", "git+ssh") or not parts.hostname:
            return None
        host, path = parts.hostname, parts.path
    path = path.strip("/").removesuffix(".git")
    if not path:
        return None
    return str(urlunsplit(("https", host, "/" + path, "", "")))
