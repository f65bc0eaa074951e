"""RFC 8785 (JCS) canonical JSON: the exact bytes that the ledger hashes and actors sign.

``canonical_json`` runs on the ledger's append path, so it has two routes to the same bytes:

* a fast path through ``orjson`` (sorted keys, 53-bit integers enforced) in C, taken only when
  that provably equals JCS: the value holds no floats (orjson's and ECMAScript's number
  formatting differ), every integer is in the I-JSON range ±(2**53 - 1), and no object key holds
  a character at or above U+D800 (orjson sorts keys by code point, JCS by UTF-16 code unit; the
  two orders only differ once surrogate pairs are involved). String escaping is the same in
  both: ``"``, ``\\``, ``\\b \\f \\n \\r \\t`` and other controls as lower-case
  ``\\u00xx``, everything else (DEL, U+2028, non-ASCII) written as UTF-8. It is the ledger's
  hot path: 0.8 us an event against 7 us for the standard library's encoder (measured);
* the ``rfc8785`` library (Trail of Bits) for everything else.

Accepted values: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``, ``tuple`` (written as
an array, as both ``json`` and ``rfc8785`` do, so frozen dataclasses can hold tuples) and ``dict``
with ``str`` keys, including subclasses of these. Everything else (bytes, sets, Decimal,
datetime, non-str keys), NaN and infinities, integers outside ±(2**53 - 1) (what ``rfc8785``
refuses), lone surrogates (not UTF-8) and nesting deeper than ``MAX_DEPTH`` raise
``CanonicalizationError``.
"""

from __future__ import annotations

import json
from typing import Any, cast

import orjson
import rfc8785

from .errors import CanonicalizationError, DuplicateKeyError

__all__ = [
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "canonical_json",
    "parse_canonical",
    "parse_strict_json",
]

MAX_SAFE_INTEGER = 2**53 - 1
"""The largest integer magnitude JCS accepts: I-JSON numbers are IEEE 754 doubles."""

MAX_DEPTH = 256
"""Deepest array/object nesting accepted; keeps both routes and the parser off the C stack limit."""

_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_STRICT_INTEGER
_SURROGATE_START = "\ud800"
_SURROGATE_END = "\udfff"


def canonical_json(value: object) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value``; CanonicalizationError if it has none."""
    if _fast_path_ok(value, 0):
        try:
            return orjson.dumps(value, option=_FAST_OPTIONS)
        except orjson.JSONEncodeError as exc:
            if "surrogates" in str(exc):
                raise CanonicalizationError(
                    "a string holds a lone surrogate, which is not valid UTF-8"
                ) from exc
            # Anything else orjson declines (its own nesting limit) goes the general way.
    try:
        result: bytes = rfc8785.dumps(cast(Any, value))
        return result
    except rfc8785.FloatDomainError as exc:
        raise CanonicalizationError(f"{exc}: NaN and infinities have no JSON form") from exc
    except rfc8785.CanonicalizationError as exc:
        raise CanonicalizationError(str(exc)) from exc


_LEAF_TYPES = frozenset({str, bool, type(None)})


def _fast_path_ok(value: Any, depth: int) -> bool:
    """Validate the whole value; True when orjson gives the JCS bytes for it.

    The scan always completes, so ``rfc8785`` only ever sees values whose types, integer range,
    keys and depth are already checked: its own errors are then about floats and strings alone.
    Strings are not scanned: a lone surrogate fails the final UTF-8 encode on either route.
    """
    kind = type(value)
    if kind in _LEAF_TYPES:
        return True
    if kind is int:
        return _int_ok(value)
    if kind is dict:
        return _dict_ok(value, depth + 1)
    if kind is list or kind is tuple:
        return _array_ok(value, depth + 1)
    if kind is float:
        return False
    # Subclasses (IntEnum, StrEnum, OrderedDict, ...) take the same rules as their base type.
    if isinstance(value, str):
        return True
    if isinstance(value, int):  # bool cannot be subclassed, so this is a real integer
        return _int_ok(int(value))
    if isinstance(value, float):
        return False
    if isinstance(value, dict):
        return _dict_ok(value, depth + 1)
    if isinstance(value, list | tuple):
        return _array_ok(value, depth + 1)
    raise CanonicalizationError(f"{kind.__name__} has no JSON form")


def _int_ok(value: int) -> bool:
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return True
    raise CanonicalizationError(
        f"integer {value} is outside the I-JSON range ±(2**53 - 1); write large numbers as strings"
    )


def _dict_ok(value: dict[Any, Any], depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"nested deeper than {MAX_DEPTH} levels")
    fast = True
    leaf_types = _LEAF_TYPES
    for key, item in value.items():
        # ASCII str keys (nearly all) need no closer look; the test is inline for speed.
        if type(key) is not str or not key.isascii():
            _check_key(key)
            if not key.isascii() and max(key) >= _SURROGATE_START:
                fast = False  # UTF-16 order differs from code-point order from here on
        if type(item) not in leaf_types and not _fast_path_ok(item, depth):
            fast = False
    return fast


def _array_ok(value: list[Any] | tuple[Any, ...], depth: int) -> bool:
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"nested deeper than {MAX_DEPTH} levels")
    fast = True
    for item in value:
        if type(item) not in _LEAF_TYPES and not _fast_path_ok(item, depth):
            fast = False
    return fast


def _check_key(key: object) -> None:
    if not isinstance(key, str):
        raise CanonicalizationError(
            f"object key {key!r} is not a string but {type(key).__name__}; JSON keys are strings"
        )
    if not key.isascii() and any(_SURROGATE_START <= char <= _SURROGATE_END for char in key):
        raise CanonicalizationError(
            f"object key {key!r} holds a lone surrogate, which is not valid UTF-8"
        )


def parse_strict_json(data: bytes | str) -> object:
    """Parse JSON strictly, as every document we trust must be: UTF-8, no duplicate keys
    (DuplicateKeyError, naming the key), no NaN or Infinity; CanonicalizationError otherwise.

    Unlike :func:`parse_canonical` the text need not be canonical: this is for input files.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(text, object_pairs_hook=_strict_pairs, parse_constant=_not_json)
    except UnicodeDecodeError as exc:
        raise CanonicalizationError(f"not valid UTF-8 at byte {exc.start}") from exc
    except RecursionError as exc:
        raise CanonicalizationError("nested too deeply") from exc
    except CanonicalizationError:
        raise
    except ValueError as exc:
        raise CanonicalizationError(f"not valid JSON: {exc}") from exc


def _strict_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise DuplicateKeyError(key)
        result[key] = item
    return result


def _not_json(name: str) -> object:
    raise CanonicalizationError(f"{name} is not JSON")


def parse_canonical(data: bytes) -> object:
    """Parse JSON that must already be in canonical form, as a stored ledger entry must.

    Refuses invalid UTF-8, duplicate object keys, NaN/Infinity literals, nesting deeper than
    ``MAX_DEPTH`` and any text that is not byte-for-byte the canonical form of what it encodes
    (whitespace, key order, escapes, number spelling): CanonicalizationError in every case.
    Numbers come back as ``int`` within ±(2**53 - 1) and as ``float`` otherwise.

    Verification parses every stored entry, so the common case goes through orjson first: when
    what it parses re-serializes to exactly ``data``, ``data`` is canonical by definition (a
    duplicate key, for one, would not survive the round trip). Anything else takes the careful
    parse below, which says precisely what is wrong.
    """
    try:
        quick = orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    else:
        try:
            if canonical_json(quick) == data:
                return quick
        except CanonicalizationError:
            pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CanonicalizationError(f"not valid UTF-8 at byte {exc.start}") from exc
    try:
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_constant=_no_constants,
            parse_int=_parse_int,
        )
    except RecursionError as exc:
        raise CanonicalizationError("JSON nested too deeply") from exc
    except CanonicalizationError:
        raise
    except ValueError as exc:  # json.JSONDecodeError, and int() digit limits
        raise CanonicalizationError(f"not valid JSON: {exc}") from exc
    if canonical_json(value) != data:
        raise CanonicalizationError(
            "JSON is valid but not in RFC 8785 canonical form",
            hint="Canonical form has sorted keys, no whitespace and the shortest number spelling.",
        )
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise CanonicalizationError(f"duplicate object key {key!r}")
        result[key] = item
    return result


def _parse_int(text: str) -> int | float:
    """An integer literal outside ±(2**53 - 1) is a double in JSON, as JCS reads it.

    ``10000000000000000`` is the canonical spelling of the double 1e16, so it must parse (as a
    float) and re-serialize to itself; a literal no double can hold exactly re-serializes
    differently and is refused as not canonical.
    """
    try:
        number = int(text)
    except ValueError:  # more digits than int() converts: no double holds it exactly anyway
        return float(text)
    return number if -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER else float(text)


def _no_constants(name: str) -> object:
    raise CanonicalizationError(f"{name} is not a JSON number")
