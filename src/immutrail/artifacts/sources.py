"""Where a build reads files: the tree of a commit, or (``--allow-dirty``) the work tree.

Both list exactly what git would put in the commit, so the choice of tree never changes *which*
files are in an image: ignored files (``.env``, build output) are never picked up, clean or dirty.
A clean build reads blobs from git's object store, not from the work tree, so a smudge filter, a
checkout with other line endings or a file touched after ``git status`` cannot change the image.
"""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import IO, BinaryIO, Self, cast

from .errors import SourceError
from .git import git_env, run_git
from .layers import Opener

READ_CHUNK = 1024 * 1024
MAX_DEFINITION_BYTES = 1024 * 1024


class SourceKind(StrEnum):
    FILE = "file"
    SYMLINK = "symlink"
    SUBMODULE = "submodule"
    """A gitlink or a nested repository: its content is not part of this repository."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    """Relative to the repository root, ``/``-separated."""
    kind: SourceKind
    executable: bool = False
    size: int = 0
    linkname: str = ""
    open: Opener | None = field(default=None, compare=False)


class SourceTree:
    """The files of a repository at one state; use as a context manager (it may run git)."""

    description: str

    def files(self) -> Sequence[SourceFile]:
        raise NotImplementedError

    def read_small(self, path: str, limit: int = MAX_DEFINITION_BYTES) -> bytes:
        """The content of one regular file (the definition itself), at most ``limit`` bytes."""
        entry = next((f for f in self.files() if f.path == path), None)
        if entry is None or entry.kind is not SourceKind.FILE or entry.open is None:
            raise SourceError(f"{path} is not a file in {self.description}")
        if entry.size > limit:
            raise SourceError(f"{path} is larger than {limit} bytes")
        with entry.open() as stream:
            return stream.read(entry.size)

    def close(self) -> None:
        """Release what the tree holds (the git process)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Exact:
    """A reader that yields exactly ``size`` bytes of ``stream`` and refuses a longer file."""

    def __init__(self, stream: IO[bytes], size: int, name: str, check_end: bool):
        self._stream = stream
        self._left = size
        self._name = name
        self._check_end = check_end

    def read(self, n: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._stream.read(want)
        self._left -= len(data)
        return data

    def finish(self) -> None:
        if self._left > 0:
            raise SourceError(f"{self._name} is shorter than when it was listed")
        if self._check_end and self._stream.read(1):
            raise SourceError(f"{self._name} grew while it was read")


class GitCommitTree(SourceTree):
    """The tree of one commit, read through one ``git cat-file --batch`` process."""

    def __init__(self, root: Path, commit: str):
        self.root = root
        self.commit = commit
        self.description = f"commit {commit[:12]}"
        self._files: list[SourceFile] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def files(self) -> Sequence[SourceFile]:
        if self._files is None:
            self._files = self._list()
        return self._files

    def _list(self) -> list[SourceFile]:
        out = run_git(self.root, "ls-tree", "-r", "-z", "-l", "--full-tree", self.commit)
        files: list[SourceFile] = []
        for record in out.split(b"\0"):
            if not record:
                continue
            meta, _, raw_path = record.partition(b"\t")
            mode, kind, oid, size = meta.split()
            path = os.fsdecode(raw_path)
            if kind == b"commit":
                files.append(SourceFile(path, SourceKind.SUBMODULE))
                continue
            oid_text, length = oid.decode(), int(size)
            if mode == b"120000":
                with self._open_blob(oid_text, length, path) as stream:
                    target = os.fsdecode(stream.read(length))
                files.append(SourceFile(path, SourceKind.SYMLINK, linkname=target))
            else:
                files.append(
                    SourceFile(
                        path,
                        SourceKind.FILE,
                        executable=mode == b"100755",
                        size=length,
                        open=self._opener(oid_text, length, path),
                    )
                )
        return files

    def _opener(self, oid: str, size: int, path: str) -> Opener:
        return lambda: self._open_blob(oid, size, path)

    @contextmanager
    def _open_blob(self, oid: str, size: int, path: str) -> Iterator[BinaryIO]:
        proc = self._batch()
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(oid.encode() + b"\n")
        proc.stdin.flush()
        header = proc.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob" or int(header[2]) != size:
            raise SourceError(f"git cannot read {path} ({oid}) from {self.description}")
        reader = _Exact(proc.stdout, size, path, check_end=False)
        try:
            yield cast(BinaryIO, reader)
        finally:
            while reader.read(READ_CHUNK):  # the caller may stop early; keep the stream in step
                pass
            if proc.stdout.read(1) != b"\n":
                raise SourceError(f"git cat-file lost step after {path}")
        reader.finish()

    def _batch(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = subprocess.Popen(
                ["git", "cat-file", "--batch"],  # noqa: S607
                cwd=self.root,
                env=git_env(),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
        return self._proc

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc.wait()
            self._proc = None


class WorkTree(SourceTree):
    """The work tree as it is: tracked files that still exist plus untracked, non-ignored ones."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.description = f"the work tree of {self.root}"
        self._files: list[SourceFile] | None = None

    def files(self) -> Sequence[SourceFile]:
        if self._files is None:
            self._files = self._list()
        return self._files

    def _list(self) -> list[SourceFile]:
        staged = run_git(self.root, "ls-files", "-z", "--stage")
        others = run_git(self.root, "ls-files", "-z", "--others", "--exclude-standard")
        gitlinks: set[str] = set()
        paths: set[str] = set()
        for record in staged.split(b"\0"):
            if record:
                meta, _, raw = record.partition(b"\t")
                path = os.fsdecode(raw)
                paths.add(path)
                if meta.startswith(b"160000"):
                    gitlinks.add(path)
        for raw in others.split(b"\0"):
            if raw:
                path = os.fsdecode(raw)
                if path.endswith("/"):  # an untracked nested repository
                    gitlinks.add(path.rstrip("/"))
                paths.add(path.rstrip("/"))
        files = [self._entry(path, path in gitlinks) for path in sorted(paths)]
        return [f for f in files if f is not None]

    def _entry(self, path: str, gitlink: bool) -> SourceFile | None:
        full = self.root / path
        try:
            info = full.lstat()
        except FileNotFoundError:
            return None  # deleted in the work tree: not part of what is built
        if gitlink:
            return SourceFile(path, SourceKind.SUBMODULE)
        if stat.S_ISLNK(info.st_mode):
            return SourceFile(path, SourceKind.SYMLINK, linkname=os.readlink(full))
        if not stat.S_ISREG(info.st_mode):
            raise SourceError(f"{path} is not a regular file, directory or symbolic link")
        if info.st_nlink > 1:
            raise SourceError(f"{path} is a hard link; layers hold no hard links")
        return SourceFile(
            path,
            SourceKind.FILE,
            executable=bool(info.st_mode & stat.S_IXUSR),
            size=info.st_size,
            open=lambda: self._open_file(path, info.st_size),
        )

    @contextmanager
    def _open_file(self, path: str, size: int) -> Iterator[BinaryIO]:
        full = self.root / path
        parent = full.parent.resolve()
        if parent != self.root and self.root not in parent.parents:
            raise SourceError(f"{path} lies behind a symbolic link that leaves the repository")
        try:
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror}") from exc
        with os.fdopen(fd, "rb") as stream:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise SourceError(f"{path} is no longer a regular file")
            reader = _Exact(stream, size, path, check_end=True)
            yield cast(BinaryIO, reader)
            reader.finish()
