"""The child of :mod:`immutrail.rego`: one regopy interpreter behind JSON lines, with limits.

``python -P .../immutrail/rego/_child.py MEMORY_BYTES STRICT TIME_S RESULT_BYTES``, started by
:class:`immutrail.rego.sandbox.RegoSession` only. Run as a script, not with ``-m``, so that it
imports nothing but the standard library and regopy: it starts once per batch, and the
package's own imports (logging, subprocess, …) would only slow that down.

It writes ``{"ready": true}`` once the interpreter is up and limited, then, for each request
line ``{"ops": [...]}`` on standard input, one answer line per operation on its standard output:

* ``{"op": "module", "name", "source"}`` -> ``{"error": null | message, "memory": bool}``;
* ``{"op": "input", "document"}`` -> ``{"error": null | message}``;
* ``{"op": "query", "ref"}`` -> ``{"defined": bool, "value": ..., "error": null | message,
  "memory": bool}``; ``memory``: the error is rego-cpp's own ``std::bad_alloc``.

After an operation that failed to add a module or set the input, the rest of the request is
answered ``{"error": "skipped"}``: nothing is evaluated over a state the caller did not ask for.

Traps of regopy and rego-cpp handled here, so that no caller has to:

* rego-cpp prints its errors on file descriptor 1: answers go to a duplicate of it, and fd 1
  itself is a file read back into the error message;
* a query for something undefined can give ``undefined`` or an error node (S-expression text)
  that is not JSON although the output is "ok": regopy's ``Output`` would raise
  ``JSONDecodeError``, so the output is read through the C API and classified here;
* snmalloc, rego-cpp's allocator, reserves ~256 GiB of address space on first use, so
  ``RLIMIT_AS`` is set after that, to what is then reserved plus the memory limit;
* rego-cpp reports memory exhaustion as an error ``std::bad_alloc`` (answered with ``memory``)
  or by aborting (the parent reads ``bad_alloc`` on standard error); Python's own
  ``MemoryError`` exits with ``EXIT_OUT_OF_MEMORY``.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import resource
import sys
import tempfile
from typing import IO, Any

EXIT_OUT_OF_MEMORY = 75
"""The exit status when Python itself ran out of memory (rego-cpp aborts instead)."""

_ERROR_MESSAGE = re.compile(r"\(errormsg \d+:([^\n]*)\)")
_PR_SET_DUMPABLE = 4
_BAD_ALLOC = "std::bad_alloc"


def main(argv: list[str]) -> int:
    memory, strict, time_s, result_bytes = (
        int(argv[0]),
        argv[1] == "1",
        float(argv[2]),
        int(argv[3]),
    )
    _no_core_dumps()  # a crash of a process with 256 GiB of address space must not dump core
    answers = os.fdopen(os.dup(1), "wb")
    printed = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the process
    os.dup2(printed.fileno(), 1)
    sys.stdout = sys.stderr  # a stray print must not corrupt the answers

    import regopy  # type: ignore[import-untyped]
    from regopy import rego_shared

    interpreter = regopy.Interpreter()
    interpreter.strict_built_in_errors = strict
    interpreter.query("x := 1")  # snmalloc reserves its address space now, before the limit
    _limit_address_space(memory)
    child = _Child(interpreter, regopy, rego_shared, printed, result_bytes)
    _write(answers, {"ready": True})
    for line in sys.stdin.buffer:
        _limit_cpu(time_s)
        request = json.loads(line)
        skipping = False
        for op in request["ops"]:
            answer = {"error": "skipped"} if skipping else child.handle(op)
            skipping = skipping or (op["op"] != "query" and answer.get("error") is not None)
            _write(answers, answer)
    return 0


class _Child:
    def __init__(
        self, interpreter: Any, regopy: Any, shared: Any, printed: IO[bytes], result_bytes: int
    ) -> None:
        self.interpreter = interpreter
        self.regopy = regopy
        self.shared = shared
        self.printed = printed
        self.result_bytes = result_bytes

    def handle(self, op: dict[str, Any]) -> dict[str, Any]:
        self.printed.seek(0)
        self.printed.truncate()
        if op["op"] == "module":
            return self.add_module(op["name"], op["source"])
        if op["op"] == "input":
            return self.set_input(op["document"])
        return self.query(op["ref"])

    def said(self) -> str:
        """What rego-cpp printed on fd 1 during this operation."""
        self.printed.seek(0)
        return self.printed.read(64 * 1024).decode("utf-8", "replace").strip()

    def add_module(self, name: str, source: str) -> dict[str, Any]:
        try:
            self.interpreter.add_module(name, source)
        except self.regopy.RegoError as exc:
            message = self.said() or str(exc)
            return {
                "error": message.removeprefix("Errors:").strip() or "does not compile",
                "memory": _BAD_ALLOC in _ERROR_MESSAGE.findall(f"{message}\n{exc}"),
            }
        return {"error": None}

    def set_input(self, document: Any) -> dict[str, Any]:
        try:
            self.interpreter.set_input(self.regopy.Input(document))
        except (self.regopy.RegoError, RecursionError, ValueError, TypeError) as exc:
            return {"error": str(exc)[:500] or type(exc).__name__}
        return {"error": None}

    def query(self, ref: str) -> dict[str, Any]:
        shared = self.shared
        try:
            output = shared.rego_query(self.interpreter._impl, f"x := {ref}")
        except shared.RegoError as exc:
            return _failed(self.said() or str(exc))
        try:
            ok = shared.rego_output_ok(output)
            text = _output_text(shared, output) if ok else _error_text(shared, output)
        finally:
            shared.rego_free_output(output)
        if not ok:
            return _failed(self.said() or text)
        if text.strip() == "undefined":
            return {"defined": False, "value": None, "error": None}
        try:
            parsed = json.loads(text)
        except RecursionError:
            return _failed(f"the value of {ref} is nested too deeply")
        except ValueError:  # an error node, not JSON: regopy would raise JSONDecodeError here
            return _failed(self.said() or text)
        results = parsed if isinstance(parsed, list) else [parsed]
        if not results:
            return {"defined": False, "value": None, "error": None}
        if len(results) > 1 or not isinstance(results[0], dict):
            return _failed(f"{ref} has {len(results)} results, not one value")
        bindings = results[0].get("bindings")
        if not isinstance(bindings, dict) or "x" not in bindings:
            return {"defined": False, "value": None, "error": None}
        answer = {"defined": True, "value": bindings["x"], "error": None}
        try:
            size = len(json.dumps(answer))
        except RecursionError:
            return _failed(f"the value of {ref} is nested too deeply")
        if size > self.result_bytes:
            return _failed(f"the value of {ref} is larger than {self.result_bytes} bytes")
        return answer


def _output_text(shared: Any, output: Any) -> str:
    """The output's JSON (or error) text, read whole: ``rego_output_string`` stops at a NUL."""
    lib = shared.rego
    size = lib.regoOutputJSONSize(output)
    buffer = ctypes.create_string_buffer(size)
    if lib.regoOutputJSON(output, buffer, size) != 0:
        return "(the interpreter could not write its output)"
    return buffer.raw[:size].rstrip(b"\0").decode("utf-8", "replace")


def _error_text(shared: Any, output: Any) -> str:
    """The errors of a failed output: its JSON text is only ``<error>``, its node has them."""
    node = shared.rego_output_node(output)
    if not node:
        return "evaluation failed"
    try:
        count = shared.rego_node_size(node)
        return "\n".join(shared.rego_node_json(shared.rego_node_get(node, i)) for i in range(count))
    except shared.RegoError:
        return "evaluation failed"


def _failed(text: str) -> dict[str, Any]:
    """An evaluation error, as the interpreter's message(s) rather than its S-expression."""
    messages = [m.strip() for m in _ERROR_MESSAGE.findall(text)]
    message = "; ".join(dict.fromkeys(messages)) if messages else text.strip()
    return {
        "defined": False,
        "value": None,
        "error": message[:2000] or "evaluation failed",
        # rego-cpp caught its own std::bad_alloc: the child is at its memory limit
        "memory": _BAD_ALLOC in messages or text.strip() == _BAD_ALLOC,
    }


def _write(stream: IO[bytes], answer: dict[str, Any]) -> None:
    stream.write(json.dumps(answer).encode() + b"\n")
    stream.flush()


def _no_core_dumps() -> None:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # A core_pattern that pipes to a helper ignores RLIMIT_CORE; "not dumpable" is respected.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)


def _limit_address_space(memory: int) -> None:
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return  # not Linux: the wall-clock limit still holds
    limit = pages * resource.getpagesize() + memory
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _limit_cpu(time_s: float) -> None:
    """A CPU-time limit a little beyond this request's deadline: an orphaned child (its parent
    killed) cannot spin forever. SIGXCPU kills it."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + time_s) + 5
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except MemoryError:
        os._exit(EXIT_OUT_OF_MEMORY)
