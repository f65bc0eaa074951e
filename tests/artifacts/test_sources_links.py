"""A work tree with a symbolic link loop where a tracked folder was: a typed input error naming
the path (it was an OSError, or a RuntimeError from Path.resolve())."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from artifacts.conftest import make_repo
from immutrail.artifacts.builder import build
from immutrail.artifacts.errors import SourceError
from immutrail.ledger.home import open_ledger

DEFINITION = "base: scratch\nlayers:\n  - source: app\n    destination: /opt/app\n"


def test_tracked_folder_replaced_by_a_link_loop(tmp_path: Path, home: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"image.yaml": DEFINITION, "app/sub/x": "x"})
    shutil.rmtree(repo / "app/sub")
    (repo / "app/sub").symlink_to("sub")
    ledger = open_ledger(home)
    before = ledger.head().size
    ledger.close()
    with pytest.raises(SourceError, match=r"app/sub/x.*Too many levels of symbolic links"):
        build(repo / "image.yaml", home, allow_dirty=True)
    ledger = open_ledger(home)
    assert ledger.head().size == before
    ledger.close()


def test_link_loops_inside_a_layer_are_links(tmp_path: Path, home: Path) -> None:
    # a loop is a valid pair of symbolic links in an image: built as written, never followed
    repo = make_repo(
        tmp_path / "repo",
        {"image.yaml": DEFINITION, "app/x": "x", "app/a": "-> b", "app/b": "-> a", "app/c": "-> c"},
    )
    assert build(repo / "image.yaml", home).digest.startswith("sha256:")


def test_a_definition_that_is_a_link_loop(tmp_path: Path, home: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"image.yaml": DEFINITION, "app/x": "x"})
    (repo / "loop").symlink_to("loop")
    with pytest.raises(SourceError, match="loop"):
        build(repo / "loop", home, allow_dirty=True)
