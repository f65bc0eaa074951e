"""The grammar of principal ids and key purposes, checked in one place.

A principal id is 1 to 128 characters: a lower-case letter or digit, then lower-case letters,
digits and ``. _ @ : -`` (``alice``, ``user:alice``, ``ci@example.org``). It names a folder of the
key store, so it can never be ``.``, ``..`` or hold a ``/``; it is a valid ledger actor as is.
"""

from __future__ import annotations

import re

from .errors import KeyInputError

PRINCIPAL_GRAMMAR = "[a-z0-9][a-z0-9._@:-]{0,127}"
PURPOSE_GRAMMAR = "[a-z][a-z0-9-]{0,31}"

PURPOSE_BUILDER = "builder"
"""The purpose of the home's build key: it signs provenance and may never approve."""

_PRINCIPAL_RE = re.compile(PRINCIPAL_GRAMMAR)
_PURPOSE_RE = re.compile(PURPOSE_GRAMMAR)


def check_principal(value: str) -> str:
    if not _PRINCIPAL_RE.fullmatch(value):
        raise KeyInputError(
            f"{value!r} is not a principal id",
            hint="Use 1-128 characters: a lower-case letter or digit first, then lower-case "
            "letters, digits and . _ @ : - (for example alice or user:alice).",
        )
    return value


def check_purpose(value: str) -> str:
    if not _PURPOSE_RE.fullmatch(value):
        raise KeyInputError(
            f"{value!r} is not a key purpose",
            hint="Use a lower-case word such as signing or approval (letters, digits, -).",
        )
    return value
