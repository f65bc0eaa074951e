"""Evaluate user-written Rego with limits: the one place immutrail runs regopy.

Users write Rego for three things (baseline rules, the gate's policy, drift's runtime rules) and
rego-cpp, under regopy, runs in native code with no limit of its own: 100,000 levels of nesting
overflow its stack (the whole process dies with SIGSEGV), ``numbers.range(1, 100000000)`` or
15,000 levels take 10-15 GB of memory, and a rule may loop for as long as it likes. So:

* :func:`check_source` refuses absurd sources before any interpreter sees them (size, and the
  nesting depth of brackets, braces and parentheses outside strings and comments);
* :class:`RegoSession` runs the interpreter in a child process (``rego/_child.py``) with an
  address-space limit and a wall-clock limit per request: a crash, memory exhaustion or timeout
  of the child is a :class:`RegoLimitError`, never the end of immutrail.

The limits are the constants of :mod:`immutrail.rego.sandbox` (:data:`DEFAULT_LIMITS`).
"""

from .sandbox import (
    DEFAULT_LIMITS,
    MAX_NESTING,
    MAX_SOURCE_BYTES,
    MAX_TOTAL_SOURCE_BYTES,
    MEMORY_LIMIT_BYTES,
    TIME_LIMIT_S,
    Limits,
    Module,
    RegoError,
    RegoLimitError,
    RegoSession,
    RegoSourceError,
    RegoUnavailableError,
    Value,
    check_source,
    nesting_depth,
)

__all__ = [
    "DEFAULT_LIMITS",
    "MAX_NESTING",
    "MAX_SOURCE_BYTES",
    "MAX_TOTAL_SOURCE_BYTES",
    "MEMORY_LIMIT_BYTES",
    "TIME_LIMIT_S",
    "Limits",
    "Module",
    "RegoError",
    "RegoLimitError",
    "RegoSession",
    "RegoSourceError",
    "RegoUnavailableError",
    "Value",
    "check_source",
    "nesting_depth",
]
