"""Where a build reads files: the tree of a commit, or (``--allow-dirty``) the work tree.

Both list exactly what git would put in the commit, so the choice of tree never changes *which*
files are in an image: ignored files (``.env``, build output) are never picked up, clean or dirty.
A clean build reads blobs from git's object store, not from the work tree, so a smudge filter, a
checkout with other line endings or a file touched after ``git status`` cannot change the image.

Blobs are read through ``git cat-file --batch``. One request and its answer per file would cost a
round trip between two processes per file (a tenth of a build of many small files), so a layer's
blobs are announced up front (:meth:`SourceTree.prefetch`): a thread writes all their ids to a
``git cat-file --batch --buffer`` and the layer writer reads the answers in the same order.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import subprocess
import threading
from collections import deque
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
PIPE_BUFFER = 1024 * 1024
MAX_DEFINITION_BYTES = 1024 * 1024


class SourceKind(StrEnum):
    FILE = "file"
    SYMLINK = "symlink"
    SUBMODULE = "submodule"
    """A gitlink or a nested repository: its content is not part of this repository."""


@dataclass(frozen=True, slots=True)
class SourceFile:
    path: str
    """Relative to the repository root, ``/``-separated."""
    kind: SourceKind
    executable: bool = False
    size: int = 0
    linkname: str = ""
    open: Opener | None = field(default=None, compare=False)
    blob: str = ""
    """The git object id of a file of a commit's tree (empty for the work tree)."""


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

    def prefetch(self, paths: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        """Within the block, the files ``paths`` will be opened in this order (one layer's files).

        A tree may use it to read ahead; opening them in another order, or other files, still
        works, only without that advantage.
        """
        del paths
        return contextlib.nullcontext()

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
    """The tree of one commit, read through ``git cat-file --batch`` processes."""

    def __init__(self, root: Path, commit: str):
        self.root = root
        self.commit = commit
        self.description = f"commit {commit[:12]}"
        self._files: list[SourceFile] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._feed: _BlobFeed | None = None

    def files(self) -> Sequence[SourceFile]:
        if self._files is None:
            self._files = self._list()
        return self._files

    def _list(self) -> list[SourceFile]:
        out = run_git(self.root, "ls-tree", "-r", "-z", "-l", "--full-tree", self.commit)
        files: list[SourceFile] = []
        links: list[tuple[int, str, int]] = []
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
                links.append((len(files), oid_text, length))
                files.append(SourceFile(path, SourceKind.SYMLINK))
            else:
                files.append(
                    SourceFile(
                        path,
                        SourceKind.FILE,
                        executable=mode == b"100755",
                        size=length,
                        open=_BlobOpener(self, oid_text, length, path),
                        blob=oid_text,
                    )
                )
        if links:  # every link target in one request: a round trip each adds up in big trees
            targets = self._read_small_blobs([(oid, size, files[i].path) for i, oid, size in links])
            for (i, _, _), target in zip(links, targets, strict=True):
                path = files[i].path
                files[i] = SourceFile(path, SourceKind.SYMLINK, linkname=os.fsdecode(target))
        return files

    def _read_small_blobs(self, wanted: Sequence[tuple[str, int, str]]) -> list[bytes]:
        """The contents of small blobs (link targets), asked of one ``git cat-file --batch``."""
        request = b"".join(oid.encode() + b"\n" for oid, _, _ in wanted)
        out = _run_batch(self.root, request)
        contents: list[bytes] = []
        at = 0
        for oid, size, path in wanted:
            end = out.find(b"\n", at)
            header = out[at:end].split() if end >= 0 else []
            if len(header) != 3 or header[1] != b"blob" or int(header[2]) != size:
                raise SourceError(f"git cannot read {path} ({oid}) from {self.description}")
            start, at = end + 1, end + 1 + size + 1
            if out[at - 1 : at] != b"\n":
                raise SourceError(f"git cat-file lost step after {path}")
            contents.append(out[start : at - 1])
        return contents

    def prefetch(self, paths: Sequence[str]) -> contextlib.AbstractContextManager[None]:
        return self._prefetching(paths)

    @contextmanager
    def _prefetching(self, paths: Sequence[str]) -> Iterator[None]:
        blobs = {f.path: f.blob for f in self.files() if f.kind is SourceKind.FILE}
        requests = [(blobs[path], path) for path in paths if path in blobs]
        if self._feed is not None:
            raise RuntimeError("a prefetch is already running")
        self._feed = _BlobFeed(self.root, requests)
        try:
            yield
        finally:
            feed, self._feed = self._feed, None
            feed.close()

    def _answer(self, oid: str, size: int, path: str) -> IO[bytes]:
        """The ``git cat-file`` output positioned at the content of blob ``oid``."""
        feed = self._feed
        if feed is not None and feed.next_is(oid, path):
            stdout = feed.take()
        else:
            proc = self._batch()
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(oid.encode() + b"\n")
            proc.stdin.flush()
            stdout = proc.stdout
        header = stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob" or int(header[2]) != size:
            raise SourceError(f"git cannot read {path} ({oid}) from {self.description}")
        return stdout

    def _batch(self) -> subprocess.Popen[bytes]:
        if self._proc is None:
            self._proc = _start_batch(self.root)
        return self._proc

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None and self._proc.stdout is not None
            self._proc.stdin.close()
            self._proc.stdout.close()
            self._proc.wait()
            self._proc = None


class _BlobOpener:
    """``open`` of one file of a commit: a slotted object, not a closure, as there is one per
    file of the tree (a closure with its cells costs several times the memory)."""

    __slots__ = ("_oid", "_path", "_size", "_tree")

    def __init__(self, tree: GitCommitTree, oid: str, size: int, path: str):
        self._tree = tree
        self._oid = oid
        self._size = size
        self._path = path

    def __call__(self) -> contextlib.AbstractContextManager[BinaryIO]:
        return _BlobReader(self._tree, self._oid, self._size, self._path)


class _BlobReader(_Exact):
    """One blob of a commit while it is read: exactly its size, then, on leaving, the rest the
    caller did not read and git's newline, so the next answer starts in step. A class rather
    than a generator context manager: there is one per file, and this is a build's inner loop."""

    def __init__(self, tree: GitCommitTree, oid: str, size: int, path: str):
        # the stream is git's output, known once entered: _Exact's fields are set then
        self._tree = tree
        self._oid = oid
        self._size = size
        self._path = path

    def __enter__(self) -> BinaryIO:
        stream = self._tree._answer(self._oid, self._size, self._path)
        super().__init__(stream, self._size, self._path, check_end=False)
        return cast(BinaryIO, self)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        while self.read(READ_CHUNK):  # the caller may stop early; keep the stream in step
            pass
        if self._stream.read(1) != b"\n":
            raise SourceError(f"git cat-file lost step after {self._name}")
        if kind is None:
            self.finish()


def _start_batch(root: Path, *options: str) -> subprocess.Popen[bytes]:
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed program, arguments are not a shell line
            ["git", "cat-file", "--batch", *options],  # noqa: S607 - git is found on PATH
            cwd=root,
            env=git_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=PIPE_BUFFER,
        )
    except FileNotFoundError as exc:
        raise SourceError("git is not installed (immutrail build needs the git command)") from exc
    assert proc.stdout is not None
    with contextlib.suppress(OSError, AttributeError):  # Linux only; a hint, not a need
        # a larger pipe lets git run further ahead of the reader: fewer wake-ups of either
        fcntl.fcntl(proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BUFFER)
    return proc


def _run_batch(root: Path, request: bytes) -> bytes:
    proc = _start_batch(root)
    out, _ = proc.communicate(request)
    if proc.returncode != 0:
        raise SourceError(f"git cat-file failed in {root} (exit status {proc.returncode})")
    return out


class _BlobFeed:
    """A ``git cat-file --batch --buffer`` told every blob id up front by a thread.

    git answers in request order, so the reader takes the answers one after the other with no
    round trip; ``--buffer`` lets git write them in large blocks. The pipe bounds what is read
    ahead: git waits while the reader is busy, and the thread waits for git.
    """

    def __init__(self, root: Path, requests: Sequence[tuple[str, str]]):
        self._pending: deque[tuple[str, str]] = deque(requests)
        self._proc = _start_batch(root, "--buffer")
        request = b"".join(oid.encode() + b"\n" for oid, _ in requests)
        self._writer = threading.Thread(
            target=self._write, args=(request,), name="git-cat-file-feed", daemon=True
        )
        self._writer.start()

    def _write(self, request: bytes) -> None:
        stdin = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(request)
            stdin.close()
        except (OSError, ValueError):  # git is gone: the reader stopped early and closed it
            return

    def next_is(self, oid: str, path: str) -> bool:
        return bool(self._pending) and self._pending[0] == (oid, path)

    def take(self) -> IO[bytes]:
        """The stream positioned at the next answer (which :meth:`next_is` matched)."""
        self._pending.popleft()
        assert self._proc.stdout is not None
        return self._proc.stdout

    def close(self) -> None:
        if self._pending:
            self._proc.kill()  # stopped early: what git would still send is not wanted
        self._proc.wait()
        self._writer.join()
        assert self._proc.stdout is not None
        self._proc.stdout.close()


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
        except (FileNotFoundError, NotADirectoryError):
            return None  # deleted in the work tree: not part of what is built
        except OSError as exc:  # a folder on the way replaced by a link loop (ELOOP), say
            raise SourceError(
                f"cannot read {path} in {self.description}: {exc.strerror or exc}"
            ) from exc
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
        # realpath, not Path.resolve(): that raises RuntimeError on a link loop (Python 3.11);
        # a loop is then refused by the O_NOFOLLOW open below
        parent = Path(os.path.realpath(full.parent))
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
