"""Event.entry_bytes assembles the JCS bytes field by field: pinned to the rfc8785 library."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from immutrail.ledger.errors import EventFormatError
from immutrail.ledger.event import Event

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
subjects = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40
)


@settings(max_examples=300, deadline=None)
@given(subjects, st.dictionaries(st.text(max_size=8), json_values, max_size=5), st.booleans())
def test_entry_bytes_are_the_rfc8785_bytes_of_the_event(
    subject: str, payload: dict[str, Any], signed: bool
) -> None:
    signature = {"keyid": "ab" * 32, "sig": "c2lnbmF0dXJl"} if signed else None
    event = Event.create(
        "artifact.built",
        "builder:ci",
        subject,
        payload,
        time="2026-03-14T09:00:00.5Z",
        signature=signature,
    )
    assert event.entry_bytes() == rfc8785.dumps(event.to_dict())


def test_a_lone_surrogate_in_a_field_is_a_format_error() -> None:
    event = Event.create("artifact.built", "builder:ci", "img:\udc80", {})
    with pytest.raises(EventFormatError, match="canonicalizable"):
        event.entry_bytes()
    event = Event.create("artifact.built", "builder:ci", "img:a", {"k": "\ud800"})
    with pytest.raises(EventFormatError, match="canonicalizable"):
        event.entry_bytes()
