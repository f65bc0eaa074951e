"""Unpacking an image for a test run, and `immutrail test`'s attested result."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from immutrail.artifacts.builder import build
from immutrail.artifacts.statements import ledger_keys, read_attestations
from immutrail.artifacts.store import Store
from immutrail.artifacts.unpack import UnpackError, make_writable, unpack_image
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.policy.errors import PolicyInputError
from immutrail.policy.imagetest import TEST_RESULT_PREDICATE, run_image_test


def test_unpack_gives_the_definition_content_read_only(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    digest = build(repo / "image.yaml", home).digest
    root = unpack_image(Store.for_home(home), digest, tmp_path / "root")
    try:
        assert (root / "opt/app/main.py").read_text() == "print('hello')\n"
        assert os.readlink(root / "opt/app/bin/main") == "../main.py"
        assert not (root / "opt/app/cache.pyc").exists()  # excluded by the definition
        assert (root / "etc/app/app.toml").stat().st_mode & 0o777 == 0o440  # 0640 minus write
        assert (root / "opt/app/bin/run").stat().st_mode & 0o111
        with pytest.raises(UnpackError):
            unpack_image(Store.for_home(home), digest, root)  # not empty
    finally:
        make_writable(root)


def test_passing_and_failing_tests_are_attested(repo: Path, home: Path) -> None:
    digest = build(repo / "image.yaml", home).digest
    store = Store.for_home(home)
    ledger = open_ledger(home)
    try:
        script = (
            'test "$(cat opt/app/main.py)" = "print(\'hello\')" && test "$APP_HOME" = /opt/app'
            ' && test "$IMMUTRAIL_ROOTFS" = "$PWD" && echo ok'
        )
        good = run_image_test(store, ledger, home, "ci", digest, ["sh", "-c", script], name="smoke")
        assert good.passed and good.exit_code == 0
        bad = run_image_test(
            store, ledger, home, "ci", digest, ["sh", "-c", "echo broken >&2; exit 3"], name="e2e"
        )
        assert not bad.passed and bad.exit_code == 3
        found, rejected = read_attestations(
            store, digest, ledger_keys(ledger), TEST_RESULT_PREDICATE
        )
        assert rejected == []
        results = {a.predicate["immutrail"]["name"]: a.predicate for a in found}
        assert results["smoke"]["result"] == "PASSED" and results["smoke"]["passedTests"] == [
            "smoke"
        ]
        assert results["e2e"]["result"] == "FAILED" and results["e2e"]["failedTests"] == ["e2e"]
        assert results["e2e"]["immutrail"]["output"]["digest"] == bad.output_digest
        # the output itself is kept beside the image and matches the recorded digest
        outputs = store.referrers(digest, "application/vnd.immutrail.test-output.v1+text")
        blobs = {store.get_manifest(o.digest)["layers"][0]["digest"] for o in outputs}
        assert bad.output_digest in blobs
        assert store.read_blob(bad.output_digest) == b"broken\n"
        types = [row.type for row in ledger.entries(EntryFilter())]
        assert types.count("image.tested") == 2
    finally:
        ledger.close()


def test_a_test_cannot_change_the_image(repo: Path, home: Path) -> None:
    digest = build(repo / "image.yaml", home).digest
    store = Store.for_home(home)
    ledger = open_ledger(home)
    try:
        if os.geteuid() != 0:  # root ignores write bits; the unpacked copy is thrown away anyway
            run = run_image_test(
                store, ledger, home, "ci", digest, ["sh", "-c", "echo x > opt/app/main.py"]
            )
            assert not run.passed
        with pytest.raises(PolicyInputError, match="not found"):
            run_image_test(store, ledger, home, "ci", digest, ["/nonexistent/test-cmd"])
        with pytest.raises(PolicyInputError):
            run_image_test(store, ledger, home, "ci", digest, [])
        store.verify(digest)  # the stored image is untouched
    finally:
        ledger.close()
