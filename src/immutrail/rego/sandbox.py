"""The parent's side of :mod:`immutrail.rego`: the pre-check, the child process, the deadlines.

The child is a fresh interpreter (``python -P …/rego/_child.py``) started with
:class:`subprocess.Popen`, not a :mod:`multiprocessing` ``fork`` child: ``drift watch`` and the
web server run threads, and a forked child would inherit whatever locks those threads held at
that moment (logging, the ledger, the import lock) and could hang on them. A fresh interpreter
inherits nothing; ``forkserver`` would too, but it re-imports the caller's ``__main__`` and keeps
a server process alive, for no gain over a ~0.1 s start that each caller pays once per batch.

Requests and answers cross the boundary as JSON lines: the parent writes one request (a list of
operations: add a module, set the input, query a reference), the child writes one answer per
operation. The time limit is a deadline for the whole request; the memory limit is set by the
child on itself (see ``__main__``), since ``preexec_fn`` is not safe in a threaded parent.
"""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ._child import EXIT_OUT_OF_MEMORY

logger = logging.getLogger(__name__)

MAX_SOURCE_BYTES = 1024 * 1024
"""Largest module, in UTF-8 bytes (callers may have a smaller cap of their own)."""
MAX_TOTAL_SOURCE_BYTES = 8 * MAX_SOURCE_BYTES
"""Largest sum of the modules loaded together."""
MAX_NESTING = 100
"""Most brackets, braces and parentheses open at once, outside strings and comments. Real rules
nest a handful of levels; rego-cpp's memory grows with the square of the depth (500 nested
objects take 110 MB, 15,000 take more than 10 GB) and its parser recurses (100,000 levels
overflow its stack)."""
MEMORY_LIMIT_BYTES = 2 * 1024**3
"""Address space the child may use beyond what it has reserved once started (``RLIMIT_AS``)."""
TIME_LIMIT_S = 30.0
"""Wall-clock time of one request: compiling the modules, or evaluating them over a document."""
MAX_RESULT_BYTES = 64 * 1024 * 1024
"""Largest JSON answer to one request (a rule may build a huge value; the parent reads it)."""
START_TIMEOUT_S = 60.0
"""Starting the child (Python, regopy) takes ~0.1 s; this is for a machine under heavy load."""

_CHILD = str(Path(__file__).with_name("_child.py"))
_READY = b'{"ready": true}\n'


@dataclass(frozen=True)
class Limits:
    """What user Rego may use; the defaults are the constants above. Tests pass smaller ones."""

    source_bytes: int = MAX_SOURCE_BYTES
    total_source_bytes: int = MAX_TOTAL_SOURCE_BYTES
    nesting: int = MAX_NESTING
    memory_bytes: int = MEMORY_LIMIT_BYTES
    time_s: float = TIME_LIMIT_S
    result_bytes: int = MAX_RESULT_BYTES


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Module:
    name: str
    """How errors name it (a path relative to what the user gave)."""
    source: str


@dataclass(frozen=True)
class Value:
    """What one reference (``data.pkg.rule``) evaluated to."""

    ref: str
    defined: bool
    value: Any = None
    error: str | None = None
    """The interpreter's message when evaluation failed (a built-in's error, a missing function)."""


class RegoError(Exception):
    """Base of this package's errors; ``diagnostics()`` is written for the person reading it."""

    def diagnostics(self) -> str:
        return str(self)


class RegoSourceError(RegoError):
    """A module refused before evaluation: too large, nested too deep, or it does not compile."""

    def __init__(self, module: str, problem: str):
        self.module = module
        self.problem = problem
        super().__init__(f"{module}: {problem}")


class RegoLimitError(RegoError):
    """The child ran out of time or memory, crashed, or gave an answer too large to take.

    ``module`` names the module being compiled, ``ref`` the reference being evaluated (when
    known); ``reason`` says what happened ("took longer than 30 s").
    """

    def __init__(self, reason: str, *, module: str | None = None, ref: str | None = None):
        self.reason = reason
        self.module = module
        self.ref = ref
        where = f"compiling {module}" if module else f"evaluating {ref}" if ref else "Rego"
        super().__init__(f"{where} {reason}")


class RegoUnavailableError(RegoError):
    """The child process could not be started (regopy missing or broken): not the user's fault."""


# --- the pre-check ---------------------------------------------------------------------------

# Comments and strings (quoted, with escapes, to the end of the line; raw, across lines) are
# matched whole so that the brackets inside them are not counted.
_TOKENS = re.compile(r'#[^\n]*|"(?:[^"\\\n]|\\.)*"?|`[^`]*`?|[\[({]|[\])}]')


def nesting_depth(source: str, stop_above: int | None = None) -> int:
    """Most brackets, braces and parentheses open at once in ``source``, outside strings and
    comments; counting stops as soon as it exceeds ``stop_above``."""
    depth = deepest = 0
    for match in _TOKENS.finditer(source):
        found = match.group()
        if found in "[({":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    break
        elif found in "])}":
            depth = max(0, depth - 1)
    return deepest


def check_source(modules: Sequence[Module], limits: Limits = DEFAULT_LIMITS) -> None:
    """Refuse modules no interpreter should see (:class:`RegoSourceError`), cheaply."""
    total = 0
    for module in modules:
        size = len(module.source.encode("utf-8", "surrogatepass"))
        if size > limits.source_bytes:
            raise RegoSourceError(module.name, f"larger than {_size(limits.source_bytes)}")
        total += size
        if total > limits.total_source_bytes:
            raise RegoSourceError(
                module.name,
                f"the Rego files together are larger than {_size(limits.total_source_bytes)}",
            )
        if nesting_depth(module.source, limits.nesting) > limits.nesting:
            raise RegoSourceError(
                module.name,
                f"nested more than {limits.nesting} levels deep (brackets, braces or "
                "parentheses); the interpreter cannot be trusted with that",
            )


# --- the session -----------------------------------------------------------------------------

_NO_INPUT: Any = object()


class RegoSession:
    """``modules`` compiled together in one child interpreter, queried as often as needed.

    The child starts at the first :meth:`compile` or :meth:`evaluate` and lives until
    :meth:`close` (or the session is garbage-collected): a caller with many documents (drift,
    one per instance) pays the start once. Each request has its own deadline. Once the child
    has failed, every later call raises the same error. Thread-safe (one request at a time).
    """

    def __init__(
        self,
        modules: Sequence[Module],
        *,
        strict: bool = True,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        check_source(modules, limits)
        self.modules = tuple(modules)
        self.strict = strict
        """Strict built-in errors: a built-in that fails is an error, not an undefined value."""
        self.limits = limits
        self._lock = threading.RLock()  # compile() and close() run inside evaluate()
        self._child: _Child | None = None
        self._compiled = False
        self._failure: RegoError | None = None

    def __enter__(self) -> RegoSession:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            if self._child is not None:
                self._child.stop()
                self._child = None
            self._compiled = False  # a later call starts a new child, which needs the modules

    def compile(self) -> None:
        """Add every module; :class:`RegoSourceError` names the first that does not compile."""
        with self._lock:
            self._compile()

    def evaluate(self, refs: Sequence[str], document: Any = _NO_INPUT) -> list[Value]:
        """Each of ``refs`` (``data.pkg`` or ``data.pkg.rule``), with ``document`` as ``input``.

        Read as the binding of ``x := <ref>``: queried bare, a rule whose value is ``false``
        would come back undefined (regopy's documented trap).
        """
        with self._lock:
            self._compile()
            ops: list[dict[str, Any]] = []
            if document is not _NO_INPUT:
                ops.append({"op": "input", "document": document})
            ops += [{"op": "query", "ref": ref} for ref in refs]
            answers = self._request(ops)
        if document is not _NO_INPUT:
            problem = answers.pop(0).get("error")
            if problem is not None:
                raise RegoLimitError(f"could not take the input document: {problem}")
        values = []
        for ref, answer in zip(refs, answers, strict=True):
            error = _text(answer.get("error"))
            if answer.get("memory"):
                raise self._out_of_memory(ref=ref)
            values.append(Value(ref, bool(answer.get("defined")), answer.get("value"), error))
        return values

    def _out_of_memory(self, *, module: str | None = None, ref: str | None = None) -> RegoError:
        # rego-cpp caught its own std::bad_alloc and reported it as an error: the interpreter
        # is at its memory limit and its state cannot be trusted any more.
        self.close()
        size = _size(self.limits.memory_bytes)
        self._failure = RegoLimitError(f"used more than {size} of memory", module=module, ref=ref)
        return self._failure

    def _compile(self) -> None:
        if self._compiled:
            return
        ops = [{"op": "module", "name": m.name, "source": m.source} for m in self.modules]
        answers = self._request(ops)
        for module, answer in zip(self.modules, answers, strict=True):
            error = _text(answer.get("error"))
            if answer.get("memory"):
                raise self._out_of_memory(module=module.name)
            if error is not None:
                self.close()  # the interpreter is of no use any more
                self._failure = RegoSourceError(module.name, error)
                raise self._failure
        self._compiled = True

    def _request(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self._failure is not None:
            raise self._failure
        if self._child is None:
            self._child = _Child(self.strict, self.limits)
        try:
            return self._child.request(ops)
        except _StoppedError as stopped:
            self._child.stop()
            self._child = None
            op = ops[stopped.done] if stopped.done < len(ops) else {}
            self._failure = RegoLimitError(
                stopped.reason,
                module=op.get("name") if op.get("op") == "module" else None,
                ref=op.get("ref"),
            )
            raise self._failure from None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


class _StoppedError(Exception):
    """The child is gone (or was stopped) after answering ``done`` operations."""

    def __init__(self, reason: str, done: int):
        self.reason = reason
        self.done = done
        super().__init__(reason)


class _Child:
    """One ``_child.py`` process, its pipes and its captured standard error."""

    def __init__(self, strict: bool, limits: Limits) -> None:
        self.limits = limits
        self.stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        command = [
            sys.executable,
            "-P",  # the script's folder is not put on sys.path: only stdlib and regopy load
            _CHILD,
            str(limits.memory_bytes),
            "1" if strict else "0",
            str(limits.time_s),
            str(limits.result_bytes),
        ]
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(  # noqa: S603 - our own module, fixed argv
                command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self.stderr,
                bufsize=0,
                close_fds=True,
                # its own session: a Ctrl-C meant for immutrail is handled by immutrail, which
                # then stops the child, instead of killing the child mid-answer
                start_new_session=True,
            )
        except OSError as exc:
            self.stderr.close()
            raise RegoUnavailableError(f"cannot start the Rego interpreter: {exc}") from exc
        self._buffer = bytearray()
        self._stop = weakref.finalize(self, _shutdown, self.process, self.stderr)
        try:
            line = self._read_line(time.monotonic() + START_TIMEOUT_S, limit_s=START_TIMEOUT_S)
        except _StoppedError as stopped:
            self.stop()
            raise RegoUnavailableError(
                f"the Rego interpreter process did not start: {stopped.reason}"
            ) from None
        if line != _READY:
            self.stop()
            raise RegoUnavailableError(f"the Rego interpreter process said {line[:200]!r}")
        logger.debug("Rego child %d started in %.3f s", self.process.pid, self.elapsed)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stop(self) -> None:
        self._stop()

    def request(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        deadline = time.monotonic() + self.limits.time_s
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"ops": ops}).encode() + b"\n")
        except (BrokenPipeError, ConnectionResetError):
            raise self._gone(0) from None
        answers: list[dict[str, Any]] = []
        for _ in ops:
            line = self._read_line(deadline, self.limits.time_s, done=len(answers))
            answers.append(json.loads(line))
        return answers

    def _read_line(self, deadline: float, limit_s: float, done: int = 0) -> bytes:
        assert self.process.stdout is not None
        fd = self.process.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > self.limits.result_bytes + 1024:
                self._kill()
                raise _StoppedError(
                    f"gave a result larger than {_size(self.limits.result_bytes)}", done
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not poller.poll(remaining * 1000):
                self._kill()
                raise _StoppedError(f"took longer than {limit_s:g} s", done)
            chunk = os.read(fd, 1024 * 1024)
            if not chunk:
                raise self._gone(done)
            self._buffer += chunk
        line = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        return line

    def _kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def _gone(self, done: int) -> _StoppedError:
        """Why the child stopped answering, from its exit status and what it wrote on stderr."""
        try:
            status = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._kill()
            status = self.process.returncode
        self.stderr.seek(0, os.SEEK_END)
        self.stderr.seek(max(0, self.stderr.tell() - 4096))
        said = self.stderr.read().decode("utf-8", "replace")
        logger.debug("Rego child %d stopped (%s): %s", self.process.pid, status, said)
        if status == EXIT_OUT_OF_MEMORY or "bad_alloc" in said or "MemoryError" in said:
            return _StoppedError(
                f"used more than {_size(self.limits.memory_bytes)} of memory", done
            )
        if status == -signal.SIGXCPU:
            return _StoppedError(f"took longer than {self.limits.time_s:g} s", done)
        if status < 0:
            return _StoppedError(f"crashed with signal {_signal_name(-status)}", done)
        last = said.strip().splitlines()[-1] if said.strip() else "no message"
        return _StoppedError(f"stopped with exit status {status} ({last[:300]})", done)


def _shutdown(process: subprocess.Popen[bytes], stderr: IO[bytes]) -> None:
    """Stop the child: end of input first (it exits by itself), then a kill if it lingers."""
    if process.poll() is None:
        try:
            if process.stdin is not None:
                process.stdin.close()
            process.wait(timeout=1)
        except (OSError, subprocess.TimeoutExpired):
            process.kill()
            process.wait()
    for stream in (process.stdin, process.stdout):
        if stream is not None:
            stream.close()
    stderr.close()


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def _size(count: int) -> str:
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= scale and count % scale == 0:
            return f"{count // scale} {unit}"
    return f"{count} bytes"
