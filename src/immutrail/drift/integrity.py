"""Compare an unpacked root filesystem (a local instance's ``rootfs/``) with its image.

Every path below the root is looked at without following a symbolic link: the walk opens each
folder relative to its parent's descriptor with ``O_NOFOLLOW | O_DIRECTORY`` (and checks it is
the folder it listed: same device and inode), and each file with ``O_NOFOLLOW | O_NONBLOCK``,
judging what it opened (``fstat``), so a path swapped for a link during the check is never
followed out of the root and a FIFO planted there never blocks it. Files up to 64 KiB are hashed
by the walking thread; larger ones by a thread pool (hashlib releases the GIL on big buffers).

**Cheaper second checks.** With ``state``, a check records for every file it found exactly as
the image says (content, mode, owner) the ``(st_dev, st_ino, st_size, st_mtime_ns,
st_ctime_ns)`` of what it opened, taken before reading, in a sealed document (:mod:`.seal`)
bound to the expected tree and to the root (path, inode, mode, owner). The next check lstat()s
every file and reads only those whose tuple changed, plus a random sample (the system's CSPRNG
chooses, so it cannot be predicted); every ``full_every``-th check reads all of them. The
shortcut does not rest on mtime: ``utime`` sets mtime to anything, but the kernel sets ctime to
*now* on every write, truncate, chmod, chown, rename or utime, and no system call sets it back,
for root neither. A content change with its mtime restored therefore still changes the tuple.
The residual risks (root setting the clock back around a change, writes to the raw block device
or to an unmounted filesystem, a changed disk under an unchanged filesystem) are what the sample
and the periodic full check are for; ``full=True`` reads everything now. docs/drift.md has the
whole argument.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import math
import os
import secrets
import stat
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .compare import IgnoreSet, Observed, Rules, added, compare, display, kind_of, removed
from .compare import unreadable as unreadable_finding
from .errors import DriftInputError, SealError
from .expected import ExpectedEntry, ExpectedTree, Kind
from .findings import Change, Difference, Finding, IntegrityReport, fmt_mode
from .seal import seal, unseal, write_atomic

__all__ = ["RecheckPolicy", "check_root"]

logger = logging.getLogger(__name__)

STATE_KIND = "immutrail.drift.integrity-state"
STATE_VERSION = 1
READ_CHUNK = 1024 * 1024
SMALL_FILE = 64 * 1024
"""Files up to this size are hashed by the walking thread: a pool round trip costs more."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

StatKey = tuple[int, int, int, int, int]
"""(st_dev, st_ino, st_size, st_mtime_ns, st_ctime_ns)."""


@dataclass(frozen=True)
class RecheckPolicy:
    """When a check with a saved state hashes more than the files whose stat tuple changed.

    ``full_every``: every N-th check hashes every file (1: always). ``sample_fraction`` and
    ``sample_min``: how many of the unchanged files are hashed anyway, chosen at random.
    """

    full_every: int = 10
    sample_fraction: float = 0.01
    sample_min: int = 32

    def __post_init__(self) -> None:
        if self.full_every < 1:
            raise DriftInputError(f"full_every must be 1 or more, not {self.full_every}")
        if not 0.0 <= self.sample_fraction <= 1.0:
            raise DriftInputError(f"sample_fraction {self.sample_fraction} is not in [0, 1]")
        if self.sample_min < 0:
            raise DriftInputError(f"sample_min must not be negative, not {self.sample_min}")

    def sample_size(self, population: int) -> int:
        return min(population, max(self.sample_min, math.ceil(population * self.sample_fraction)))


@dataclass
class _State:
    checks_since_full: int = 0
    files: dict[str, StatKey] = field(default_factory=dict)


@dataclass
class _Hashed:
    """A regular file on its way through the pool."""

    path: str
    expected: ExpectedEntry | None
    before: os.stat_result
    future: Future[tuple[str, int]] | None = None
    result: tuple[str, int] | None = None
    error: str | None = None


def check_root(
    expected: ExpectedTree,
    root: Path,
    *,
    state: Path | None = None,
    ignore: Sequence[str] = (),
    full: bool = False,
    policy: RecheckPolicy | None = None,
    seal_key: bytes | None = None,
    workers: int | None = None,
) -> IntegrityReport:
    """Compare the unpacked root filesystem at ``root`` with ``expected``.

    ``state``: the file that makes the next check cheaper (read, then rewritten); ``ignore``:
    paths the runtime owns (each with everything below it); ``full``: hash every file whatever
    the state says; ``seal_key``: the key that seals the state (``drift_key(store)``), else the
    state carries a plain digest. Raises DriftInputError for a root that is not a folder.
    """
    started = time.perf_counter()
    policy = policy or RecheckPolicy()
    ignored = IgnoreSet(ignore)
    root = Path(root)
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError as exc:
        raise DriftInputError(f"the root {root} does not exist") from exc
    except OSError as exc:
        raise DriftInputError(f"the root {root} is not a folder that can be opened: {exc}") from exc
    try:
        root_stat = os.fstat(root_fd)
        rules = Rules.unpacked(root_stat.st_mode, root_stat.st_uid, root_stat.st_gid)
        binding = _binding(expected, root, root_stat)
        notes: list[str] = []
        previous = _load_state(state, seal_key, binding, notes)
        reason = _full_reason(full, state, previous, policy)
        if reason is not None:
            notes.append(f"every file hashed: {reason}")
        sample = _sample(previous, policy) if reason is None else set()
        walk = _Walk(
            expected, ignored, rules, previous.files if reason is None else {}, sample, workers
        )
        with walk:
            walk.run(root_fd)
        findings = walk.findings
        root_finding = _root_finding(root_stat, rules)
        if root_finding is not None:
            findings.append(root_finding)
        unchecked = 0
        for entry in expected:
            if entry.path in walk.seen or ignored.covers(entry.path):
                continue
            if walk.below_unlisted(entry.path):
                unchecked += 1  # maybe there, maybe not: the folder's finding says why
                continue
            findings.append(removed(display(entry.path), entry))
        if unchecked:
            notes.append(f"{unchecked} paths of the image are below folders that could not be read")
        if state is not None:
            checks = 0 if reason is not None else previous.checks_since_full + 1
            _save_state(state, seal_key, binding, _State(checks, walk.verified), notes)
    finally:
        os.close(root_fd)
    return IntegrityReport.build(
        findings,
        image=expected.image,
        target=str(root),
        runtime="local",
        entries_checked=walk.entries,
        files_checked=walk.files,
        files_hashed=walk.files_hashed,
        files_trusted=walk.files_trusted,
        bytes_hashed=walk.bytes_hashed,
        duration_seconds=time.perf_counter() - started,
        full=reason is not None,
        expected_source=expected.source,
        notes=tuple(notes)
        + ((f"expected tree rebuilt: {expected.cache_problem}",) if expected.cache_problem else ()),
    )


def _root_finding(root_stat: os.stat_result, rules: Rules) -> Finding | None:
    """The root folder itself: read-only, no special bits (every other folder is held to it)."""
    mode = stat.S_IMODE(root_stat.st_mode)
    if rules.directory_mode is None or mode == rules.directory_mode:
        return None
    return Finding(
        "/",
        Change.MODIFIED,
        str(Kind.DIRECTORY),
        (Difference("mode", fmt_mode(rules.directory_mode), fmt_mode(mode)),),
        detail="the unpacked root must have no write or special bit",
    )


# --- the walk -------------------------------------------------------------------------------


class _Walk:
    """One pass over the tree: compares what it can at once, hashes files in a pool."""

    def __init__(
        self,
        expected: ExpectedTree,
        ignored: IgnoreSet,
        rules: Rules,
        trusted: dict[str, StatKey],
        sample: set[str],
        workers: int | None,
    ) -> None:
        self.expected = expected
        self.ignored = ignored
        self.rules = rules
        self.trusted = trusted
        self.sample = sample
        count = workers or min(4, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=count, thread_name_prefix="drift-hash")
        self.in_flight: deque[_Hashed] = deque()
        self.max_in_flight = 4 * count
        self.hashed: list[_Hashed] = []
        self.findings: list[Finding] = []
        self.seen: set[str] = set()
        self.unlisted: set[str] = set()
        self.verified: dict[str, StatKey] = {}
        self.entries = 0
        self.files = 0
        self.files_hashed = 0
        self.files_trusted = 0
        self.bytes_hashed = 0

    def __enter__(self) -> _Walk:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True)  # every queued job closes its descriptor

    def run(self, root_fd: int) -> None:
        stack: list[tuple[int, str, Iterator[os.DirEntry[str]]]] = []
        entries = self._list(root_fd, "")
        if entries is not None:
            stack.append((root_fd, "", entries))
        try:
            while stack:
                fd, folder, pending = stack[-1]
                entry = next(pending, None)
                if entry is None:
                    stack.pop()
                    if fd != root_fd:
                        os.close(fd)
                    continue
                path = f"{folder}/{entry.name}" if folder else entry.name
                child = self._visit(fd, path, entry)
                if child is not None:
                    stack.append(child)
        finally:
            for fd, _, _ in stack:
                if fd != root_fd:
                    os.close(fd)
        while self.in_flight:
            self._finish(self.in_flight.popleft())
        for job in self.hashed:
            self._conclude(job)

    def _list(self, fd: int, path: str) -> Iterator[os.DirEntry[str]] | None:
        try:
            with os.scandir(fd) as found:
                return iter(list(found))
        except OSError as exc:
            self._unlisted(path, exc)
            return None

    def _unlisted(self, path: str, exc: OSError) -> None:
        self.unlisted.add(path)
        self.findings.append(
            unreadable_finding(display(path) if path else "/", "directory", _why(exc))
        )

    def below_unlisted(self, path: str) -> bool:
        """Whether ``path`` is below a folder the walk could not open or list."""
        if not self.unlisted:
            return False
        if "" in self.unlisted:
            return True
        parts = path.split("/")
        return any("/".join(parts[:end]) in self.unlisted for end in range(1, len(parts)))

    def _visit(
        self, fd: int, path: str, entry: os.DirEntry[str]
    ) -> tuple[int, str, Iterator[os.DirEntry[str]]] | None:
        if self.ignored.covers(path):
            return None
        # the listing's d_type says "regular file" at no cost; _file confirms on what it opens
        if entry.is_file(follow_symlinks=False) and self._file(fd, path, entry.name):
            return None
        try:
            info = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None  # gone since the listing: reported as removed if the image has it
        except OSError as exc:
            self._count(path)
            self.findings.append(unreadable_finding(display(path), None, _why(exc)))
            return None
        kind = kind_of(info.st_mode)
        if kind == Kind.FILE:  # became one since the listing
            if not self._file(fd, path, entry.name):
                self._count(path)
                self.findings.append(
                    unreadable_finding(display(path), None, "changed while it was being checked")
                )
            return None
        self._count(path)
        want = self.expected.get(path)
        link = None
        if kind == Kind.SYMLINK:
            try:
                link = os.readlink(entry.name, dir_fd=fd)
            except OSError as exc:
                self.findings.append(unreadable_finding(display(path), kind, _why(exc)))
                return None
        observed = Observed(kind, info.st_mode, info.st_uid, info.st_gid, 0, None, link)
        self._judge(path, want, observed)
        if kind != Kind.DIRECTORY:
            return None
        try:
            child = os.open(entry.name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            self._unlisted(path, exc)
            return None
        try:
            opened = os.fstat(child)
            if (opened.st_dev, opened.st_ino) != (info.st_dev, info.st_ino):
                raise OSError(f"{path} was replaced while it was being checked")
        except OSError as exc:
            os.close(child)
            self._unlisted(path, exc)
            return None
        entries = self._list(child, path)
        if entries is None:
            os.close(child)
            return None
        return child, path, entries

    def _count(self, path: str, regular: bool = False) -> None:
        self.seen.add(path)
        self.entries += 1
        if regular:
            self.files += 1

    def _judge(self, path: str, want: ExpectedEntry | None, observed: Observed) -> bool:
        """Record the finding for ``path``, if any; whether it is exactly as the image says."""
        if want is None:
            if observed.kind == Kind.DIRECTORY and self.ignored.holds(path):
                return True  # made by the runtime to hold a mount point
            self.findings.append(added(display(path), observed))
            return False
        finding = compare(display(path), want, observed, self.rules)
        if finding is None:
            return True
        self.findings.append(finding)
        return False

    # -- regular files ------------------------------------------------------------------------

    def _file(self, fd: int, path: str, name: str) -> bool:
        """Check ``name`` as a regular file; False when it is not one (any more)."""
        if self.trusted:
            # a check with a state: one lstat decides whether the file must be read at all
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:
                return False  # gone or unreadable: the general path reports it
            if not stat.S_ISREG(info.st_mode):
                return False
            key = _key(info)
            if self.trusted.get(path) == key and path not in self.sample:
                # unchanged since a check found it exactly as the image says: content (same
                # inode, size, mtime, ctime) and mode and owner (chmod/chown change ctime too)
                self._count(path, regular=True)
                self.files_trusted += 1
                self.verified[path] = key
                return True
        try:
            file_fd = os.open(name, _FILE_FLAGS, dir_fd=fd)
        except FileNotFoundError:
            return True  # gone since the listing: reported as removed if the image has it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return False  # a symbolic link now: O_NOFOLLOW refused to follow it
            self._count(path, regular=True)
            self.findings.append(unreadable_finding(display(path), str(Kind.FILE), _why(exc)))
            return True
        try:
            info = os.fstat(file_fd)
        except OSError as exc:
            os.close(file_fd)
            self._count(path, regular=True)
            self.findings.append(unreadable_finding(display(path), str(Kind.FILE), _why(exc)))
            return True
        if not stat.S_ISREG(info.st_mode):
            os.close(file_fd)
            return False
        self._count(path, regular=True)
        # what was opened is what is judged and remembered: its stat, taken before reading
        job = _Hashed(path, self.expected.get(path), info)
        self.hashed.append(job)
        if info.st_size <= SMALL_FILE:
            try:
                job.result = _hash_fd(file_fd, info.st_size)
            except OSError as exc:
                job.error = _why(exc)
            return True
        job.future = self.pool.submit(_hash_fd, file_fd, info.st_size)
        self.in_flight.append(job)
        if len(self.in_flight) > self.max_in_flight:  # bounds the open descriptors
            self._finish(self.in_flight.popleft())
        return True

    def _finish(self, job: _Hashed) -> None:
        assert job.future is not None
        try:
            job.result = job.future.result()
        except OSError as exc:
            job.error = _why(exc)

    def _conclude(self, job: _Hashed) -> None:
        info = job.before
        if job.result is None:
            self.findings.append(
                unreadable_finding(display(job.path), str(Kind.FILE), job.error or "not read")
            )
            return
        digest, size = job.result
        self.files_hashed += 1
        self.bytes_hashed += size
        observed = Observed(str(Kind.FILE), info.st_mode, info.st_uid, info.st_gid, size, digest)
        if self._judge(job.path, job.expected, observed) and job.expected is not None:
            # a change after the stat above changes ctime: the next check reads it again
            self.verified[job.path] = _key(info)


_buffers = threading.local()


def _hash_fd(fd: int, size_hint: int) -> tuple[str, int]:
    """SHA-256 hex and size of what ``fd`` holds; closes ``fd``."""
    try:
        if size_hint <= SMALL_FILE:
            # one read: a regular file that returns exactly its size when asked for one byte
            # more is at its end
            data = os.read(fd, size_hint + 1)
            if len(data) == size_hint:
                return hashlib.sha256(data).hexdigest(), size_hint
            digest, size = hashlib.sha256(data), len(data)
        else:
            digest, size = hashlib.sha256(), 0
        buffer: bytearray | None = getattr(_buffers, "buffer", None)
        if buffer is None:  # one buffer per thread, not one allocation per file
            buffer = _buffers.buffer = bytearray(READ_CHUNK)
        view = memoryview(buffer)
        while count := os.readv(fd, [buffer]):
            digest.update(view[:count])
            size += count
        return digest.hexdigest(), size
    finally:
        os.close(fd)


def _key(info: os.stat_result) -> StatKey:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


# --- the state ------------------------------------------------------------------------------


def _binding(expected: ExpectedTree, root: Path, root_stat: os.stat_result) -> dict[str, Any]:
    """What a state belongs to: one expected tree, one root (by path and inode)."""
    return {
        "tree": expected.digest,
        "image": expected.image,
        "root": str(root.absolute()),
        "root_id": [root_stat.st_dev, root_stat.st_ino],
        # every folder's expected mode and every path's owner derive from these two
        "root_mode": stat.S_IMODE(root_stat.st_mode),
        "root_owner": [root_stat.st_uid, root_stat.st_gid],
    }


def _load_state(
    path: Path | None, key: bytes | None, binding: dict[str, Any], notes: list[str]
) -> _State:
    if path is None:
        return _State()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _State(checks_since_full=-1)  # never checked: the first check is full
    except OSError as exc:
        notes.append(f"state {path} not used: {_why(exc)}")
        return _State(checks_since_full=-1)
    try:
        body = unseal(data, key, f"the state {path}")
        if body.get("kind") != STATE_KIND or body.get("version") != STATE_VERSION:
            raise SealError(f"the state {path} is not a version {STATE_VERSION} check state")
        for name, value in binding.items():
            if body.get(name) != value:
                raise SealError(f"the state {path} belongs to another {name}")
        checks = body.get("checks_since_full")
        files = body.get("files")
        if not isinstance(checks, int) or not isinstance(files, dict):
            raise SealError(f"the state {path} is malformed")
        parsed = {name: tuple(value) for name, value in files.items() if isinstance(value, list)}
    except (SealError, ValueError) as exc:
        logger.warning("not using %s: %s", path, exc)
        notes.append(f"state discarded: {exc}")
        return _State(checks_since_full=-1)
    return _State(checks, parsed)


def _full_reason(
    full: bool, path: Path | None, previous: _State, policy: RecheckPolicy
) -> str | None:
    if full:
        return "a full check was asked for"
    if path is None:
        return "no state file"
    if previous.checks_since_full < 0:
        return "no usable state from an earlier check"
    if previous.checks_since_full + 1 >= policy.full_every:
        return f"every {policy.full_every} checks hash everything"
    return None


def _sample(previous: _State, policy: RecheckPolicy) -> set[str]:
    """Files to hash although their stat tuple is unchanged (the system CSPRNG chooses)."""
    candidates = sorted(previous.files)
    size = policy.sample_size(len(candidates))
    return set(secrets.SystemRandom().sample(candidates, size)) if size else set()


def _save_state(
    path: Path, key: bytes | None, binding: dict[str, Any], current: _State, notes: list[str]
) -> None:
    body = {
        "kind": STATE_KIND,
        "version": STATE_VERSION,
        **binding,
        "checks_since_full": current.checks_since_full,
        "files": {name: list(value) for name, value in current.files.items()},
    }
    try:
        write_atomic(path, seal(body, key))
    except OSError as exc:
        logger.warning("cannot write the check state %s: %s", path, exc)
        notes.append(f"state not saved: {_why(exc)}")
