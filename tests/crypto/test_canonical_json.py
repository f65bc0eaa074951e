"""RFC 8785 (JCS) canonical JSON: the RFC's examples, the fast path pinned to rfc8785, errors."""

from __future__ import annotations

import enum
import json
import math
import struct
from decimal import Decimal
from typing import Any

import hypothesis.strategies as st
import pytest
import rfc8785
from hypothesis import given, settings

from immutrail.crypto import canonical
from immutrail.crypto.canonical import MAX_DEPTH, MAX_SAFE_INTEGER, canonical_json, parse_canonical
from immutrail.crypto.errors import CanonicalizationError, CryptoError

# RFC 8785 Appendix B: IEEE 754 bit patterns and their JCS serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


def ieee(bits: str) -> float:
    value: float = struct.unpack(">d", bytes.fromhex(bits))[0]
    return value


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert canonical_json(ieee(bits)) == expected.encode()
    assert canonical_json([ieee(bits)]) == f"[{expected}]".encode()


@pytest.mark.parametrize("bits", ["7fffffffffffffff", "7ff0000000000000", "fff0000000000000"])
def test_nan_and_infinities_are_refused(bits: str) -> None:
    with pytest.raises(CanonicalizationError, match="NaN and infinities"):
        canonical_json({"x": ieee(bits)})


def test_rfc8785_section_3_2_2_example() -> None:
    """Numbers, escaping and literals: the RFC's main example, from its JSON text."""
    text = (
        '{\n  "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],\n'
        '  "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",\n'
        '  "literals": [null, true, false]\n}'
    )
    expected = (
        '{"literals":[null,true,false],'
        '"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    ).encode()
    assert canonical_json(json.loads(text)) == expected
    assert parse_canonical(expected) == json.loads(text)


def test_rfc8785_section_3_2_3_sorting_example() -> None:
    """Keys sort by UTF-16 code units: U+1F600 (D83D DE00) comes before U+FB33."""
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode("utf-8")
    assert canonical_json(value) == expected
    # Python's own key order puts U+FB33 first: the reason this value must leave the fast path.
    naive = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert naive.encode("utf-8") != expected


def test_cyberphone_weird_example() -> None:
    """json-canonicalization testdata/input/weird.json -> output/weird.json (DEL stays raw)."""
    text = (
        '{\n  "\\u20ac": "Euro Sign",\n  "1": "One",\n  "\\u0080": "Control\\u007f",\n'
        '  "\\ud83d\\ude02": "Smiley",\n  "\\u00f6": "Latin Small Letter O With Diaeresis",\n'
        '  "\\ufb33": "Hebrew Letter Dalet With Dagesh",\n  "</script>": "Browser Challenge"\n}\n'
    )
    expected = (
        '{"1":"One","</script>":"Browser Challenge","\u0080":"Control\u007f",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f602":"Smiley","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    ).encode("utf-8")
    assert canonical_json(json.loads(text)) == expected


def test_control_characters_are_escaped_like_ecmascript() -> None:
    value = "".join(chr(c) for c in range(0x20)) + '"\\/\u007f\u2028\u2029'
    expected = (
        '"\\u0000\\u0001\\u0002\\u0003\\u0004\\u0005\\u0006\\u0007\\b\\t\\n\\u000b\\f\\r'
        "\\u000e\\u000f\\u0010\\u0011\\u0012\\u0013\\u0014\\u0015\\u0016\\u0017\\u0018"
        '\\u0019\\u001a\\u001b\\u001c\\u001d\\u001e\\u001f\\"\\\\/\u007f\u2028\u2029"'
    ).encode("utf-8")
    assert canonical_json(value) == expected
    assert canonical_json(value) == rfc8785.dumps(value)


# --- the fast path ----------------------------------------------------------------------------

json_keys = st.text(max_size=8)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=30,
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
json_values_with_floats = st.recursive(
    json_scalars | finite_floats,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(json_keys, children, max_size=5)
    ),
    max_leaves=30,
)


@settings(max_examples=500)
@given(json_values)
def test_fast_path_equals_rfc8785_for_values_without_floats(value: Any) -> None:
    data = canonical_json(value)
    assert data == rfc8785.dumps(value)
    assert json.loads(data) == value
    assert parse_canonical(data) == value


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.text(alphabet=st.characters(min_codepoint=0xD7F0, exclude_categories=("Cs",))),
        st.integers(0, 9),
    )
)
def test_keys_from_u_d800_up_sort_by_utf16(value: dict[str, int]) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=300)
@given(json_values_with_floats)
def test_values_with_floats_round_trip(value: Any) -> None:
    data = canonical_json(value)
    assert data == rfc8785.dumps(value)
    assert parse_canonical(data) == value  # big integral doubles come back as floats, not ints
    assert canonical_json(parse_canonical(data)) == data


def test_fast_path_skips_rfc8785(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(canonical.rfc8785, "dumps", lambda v: calls.append(v) or b"")
    canonical_json({"id": "x", "n": [1, -2, MAX_SAFE_INTEGER], "ok": True, "u": "\u00e9\u20ac"})
    assert calls == []
    for slow in ({"f": 1.5}, {"\U0001f600": 1}, {"\ue000": 1}, [{"a": [0.0]}]):
        canonical_json(slow)
    assert len(calls) == 4


def test_tuples_and_scalar_subclasses_are_plain_json() -> None:
    class Colour(enum.IntEnum):
        RED = 1

    class Name(enum.StrEnum):
        ALICE = "alice"

    assert canonical_json({"b": (1, (2,)), "a": []}) == b'{"a":[],"b":[1,[2]]}'
    assert canonical_json({"c": Colour.RED, "n": Name.ALICE}) == b'{"c":1,"n":"alice"}'
    assert canonical_json({"c": Colour.RED, "f": 0.5}) == b'{"c":1,"f":0.5}'


@pytest.mark.parametrize("number", [MAX_SAFE_INTEGER + 1, -MAX_SAFE_INTEGER - 1, 2**64, -(2**80)])
def test_integers_outside_ijson_range_are_refused(number: int) -> None:
    with pytest.raises(CanonicalizationError, match="I-JSON range"):
        canonical_json({"n": number})
    with pytest.raises(rfc8785.IntegerDomainError):  # the library we follow refuses them too
        rfc8785.dumps({"n": number})
    assert (
        canonical_json([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER])
        == b"[9007199254740991,-9007199254740991]"
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({1: "a"}, "not a string but int"),
        ({None: "a"}, "not a string but NoneType"),
        ({("a",): 1}, "not a string but tuple"),
        (b"bytes", "bytes has no JSON form"),
        ({"s": {1, 2}}, "set has no JSON form"),
        ([Decimal("1.5")], "Decimal has no JSON form"),
        ({"o": object()}, "object has no JSON form"),
        ("lone \ud800 surrogate", "lone surrogate"),
        ({"k": ["x\udfff"]}, "lone surrogate"),
        ({"k\ud83d": 1}, "lone surrogate"),
        ({"f": 1.5, "s": "\udc00"}, "non-UTF-8"),
    ],
)
def test_values_without_a_json_form_are_refused(value: object, message: str) -> None:
    with pytest.raises(CanonicalizationError, match=message) as info:
        canonical_json(value)
    assert isinstance(info.value, CryptoError) and isinstance(info.value, ValueError)


def test_nesting_is_bounded_and_cycles_do_not_recurse_forever() -> None:
    deep: list[object] = []
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    assert canonical_json(deep) == b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    with pytest.raises(CanonicalizationError, match="nested deeper"):
        canonical_json([deep])
    cycle: dict[str, object] = {}
    cycle["self"] = cycle
    with pytest.raises(CanonicalizationError, match="nested deeper"):
        canonical_json(cycle)


# --- parse_canonical --------------------------------------------------------------------------


def test_parse_canonical_returns_the_value() -> None:
    data = b'{"a":[1,true,null,"x"],"b":{"c":0.5}}'
    assert parse_canonical(data) == {"a": [1, True, None, "x"], "b": {"c": 0.5}}


def test_parse_canonical_reads_big_integral_doubles_as_jcs_does() -> None:
    """``10000000000000000`` is the JCS form of the double 1e16, so it is canonical."""
    assert parse_canonical(b"[10000000000000000,295147905179352830000]") == [1e16, 2.0**68]
    with pytest.raises(CanonicalizationError, match="not in RFC 8785 canonical form"):
        parse_canonical(b"9007199254740993")  # no double holds it: it would re-serialize as ...992


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a":1,"a":1}', "duplicate object key 'a'"),
        (b'{"a":{"b":1,"b":2}}', "duplicate object key 'b'"),
        (b"NaN", "NaN is not a JSON number"),
        (b"[-Infinity]", "-Infinity is not a JSON number"),
        (b'{ "a":1}', "canonical form"),
        (b'{"b":1,"a":2}', "canonical form"),
        (b"[1.0]", "canonical form"),
        (b"[1E2]", "canonical form"),
        (b"[-0]", "canonical form"),
        (b'["\\u000F"]', "canonical form"),
        (b'["\\/"]', "canonical form"),
        (b'["\\u00e9"]', "canonical form"),
        (b"[1]\n", "canonical form"),
        (b"\xef\xbb\xbf[1]", "BOM"),
        (b'["\\ud800"]', "lone surrogate"),
        (b'["\xed\xa0\x80"]', "not valid UTF-8 at byte 2"),
        (b"\xff", "not valid UTF-8 at byte 0"),
        (b"[1,]", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"[1e400]", "NaN and infinities"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply|nested deeper"),
        (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), "nested deeper"),
    ],
)
def test_parse_canonical_refuses(data: bytes, message: str) -> None:
    with pytest.raises(CanonicalizationError, match=message):
        parse_canonical(data)


def test_canonicalization_error_diagnostics_carry_the_hint() -> None:
    with pytest.raises(CanonicalizationError) as info:
        parse_canonical(b'{"b":1,"a":2}')
    assert "sorted keys" in info.value.diagnostics()
    assert str(info.value) in info.value.diagnostics()


def test_negative_zero_and_integral_floats() -> None:
    assert canonical_json([-0.0, 1.0, 1e16, 5e-7]) == b"[0,1,10000000000000000,5e-7]"
    assert math.copysign(1, parse_canonical(b"[0]")[0]) == 1  # type: ignore[index]
