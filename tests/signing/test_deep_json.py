"""JSON nested deeper than Python's json can recurse (a RecursionError, not a ValueError):
a trusted root is a typed error (exit 2 from `verify`), a bundle fails verification."""

from __future__ import annotations

from pathlib import Path

import pytest

from immutrail.artifacts.builder import build
from immutrail.signing.sigstore_bundles import (
    BundleStatus,
    TrustRootError,
    check_bundle,
    load_trust_root,
)

from .test_cli_signing import run, state

DEEP = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"tlogs": ' + DEEP + b"}"


@pytest.mark.parametrize("data", [DEEP, DEEP_OBJECT])
def test_deep_trusted_root_is_a_trust_root_error(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "root.json"
    path.write_bytes(data)
    with pytest.raises(TrustRootError, match="nested too deeply"):
        load_trust_root(path)


def test_deep_bundle_fails() -> None:
    result = check_bundle(DEEP_OBJECT, load_trust_root(), None)
    assert result.status is BundleStatus.FAILED


def test_verify_refuses_a_deep_trusted_root(repo: Path, home: Path, tmp_path: Path) -> None:
    digest = build(repo / "image.yaml", home, tag="app:1").digest
    root = tmp_path / "root.json"
    root.write_bytes(DEEP_OBJECT)
    before = state(home, digest)
    message = run(home, "verify", digest, "--trusted-root", str(root), code=2)
    assert "nested too deeply" in message and "Traceback" not in message
    assert state(home, digest) == before
