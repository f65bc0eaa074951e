"""Exclude globs: names anywhere, anchored paths, ``**``, directories excluding their contents."""

from __future__ import annotations

import pytest

from immutrail.artifacts.globs import MAX_DOUBLE_STARS, Excluder, GlobError


@pytest.mark.parametrize(
    ("pattern", "path", "excluded"),
    [
        ("*.pyc", "a.pyc", True),
        ("*.pyc", "deep/in/b.pyc", True),
        ("*.pyc", "a.py", False),
        ("__pycache__", "pkg/__pycache__/x.pyc", True),
        ("tests/data", "tests/data/big.bin", True),
        ("tests/data", "src/tests/data/x", False),  # anchored at the source
        ("docs/**/*.png", "docs/a/b/c.png", True),
        ("docs/**/*.png", "docs/c.png", True),
        ("docs/**/*.png", "other/docs/c.png", False),
        ("*/secret", "a/secret", True),
        ("*/secret", "a/b/secret", False),  # * stays inside one component
        ("File.TXT", "file.txt", False),  # case-sensitive everywhere
        ("[ab].txt", "b.txt", True),
    ],
)
def test_matching(pattern: str, path: str, excluded: bool) -> None:
    assert Excluder([pattern]).excluded(path) is excluded


@pytest.mark.parametrize("pattern", ["/abs", "a/../b", "a//b", "./a", "/".join(["**"] * 5)])
def test_invalid_patterns(pattern: str) -> None:
    with pytest.raises(GlobError):
        Excluder([pattern])


def test_many_double_stars_stay_fast() -> None:
    pattern = "/".join(["**"] * MAX_DOUBLE_STARS + ["x"])
    assert not Excluder([pattern]).excluded("/".join(["d"] * 200))
    assert not Excluder([])
