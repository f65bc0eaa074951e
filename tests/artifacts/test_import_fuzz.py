"""Fuzz the importer with generated tar archives (hypothesis).

Archives start empty, from a valid OCI layout or from a valid ``docker save`` archive, then get
random members (names with ``..``, absolute, long, duplicated, NUL; files, folders, symbolic and
hard links to random targets, devices, FIFOs), random bytes in place of a blob, random cuts and
random byte flips, optionally gzip. Whatever comes out, the importer must either import it or
raise an ``ImageImportError``, never any other exception, and on error leave the store and the
ledger exactly as they were. Bounded to about 200 examples so the file runs in well under 60 s.
"""

from __future__ import annotations

import gzip
import io
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from immutrail.artifacts.import_errors import ImageImportError, ImportLimits
from immutrail.artifacts.importer import import_image
from immutrail.artifacts.store import Store

from .test_import import docker_archive, layer_of, new_home, oci_layout, snapshot, tar_of

LIMITS = ImportLimits(
    max_members=64, max_name_bytes=512, max_blob_bytes=256 * 1024, max_total_bytes=1024 * 1024
)
BASE_OCI = oci_layout([layer_of({"bin/app": (b"#!/bin/sh\n", 0o755)}), layer_of({"etc/x": b"1"})])[
    0
]
BASE_DOCKER = docker_archive([layer_of({"a/b": b"c"})])[0]
NAMES = [
    "index.json",
    "oci-layout",
    "manifest.json",
    "blobs",
    "blobs/sha256",
    *sorted(BASE_OCI),
    *sorted(BASE_DOCKER),
    "..",
    "../x",
    "a/../../x",
    "/etc/passwd",
    "./index.json",
    "blobs/sha256/../../../x",
    "a" * 300,
    "x\x00y",
]
KINDS = [
    tarfile.REGTYPE,
    tarfile.DIRTYPE,
    tarfile.SYMTYPE,
    tarfile.LNKTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.FIFOTYPE,
    tarfile.CONTTYPE,
]

names = st.one_of(st.sampled_from(NAMES), st.text(min_size=0, max_size=40))
members = st.tuples(
    names,
    st.sampled_from(KINDS),
    st.one_of(st.sampled_from(NAMES), st.text(max_size=20)),
    st.binary(max_size=300),
    st.integers(min_value=0, max_value=0o7777),
)


def _tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    try:
        return tar_of(entries)
    except (ValueError, UnicodeError):  # a name or link the tar format cannot hold
        return b""


def _entry(
    draw: st.DrawFn, spec: tuple[str, bytes, str, bytes, int]
) -> tuple[tarfile.TarInfo, bytes | None]:
    name, kind, link, data, mode = spec
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    if kind in (tarfile.REGTYPE, tarfile.CONTTYPE):
        info.size = len(data)
        return info, data
    return info, None


@st.composite
def random_layer_layout(draw: st.DrawFn) -> dict[str, bytes]:
    """A valid layout around a layer made of random entries: the layer checks get the input."""
    layer_entries = [_entry(draw, spec) for spec in draw(st.lists(members, max_size=6))]
    layer = _tar(layer_entries)
    return oci_layout([layer])[0] if layer else {}


@st.composite
def archives(draw: st.DrawFn) -> bytes:
    base = draw(st.sampled_from(["none", "oci", "docker", "layer", "layer"]))
    files = {"none": {}, "oci": BASE_OCI, "docker": BASE_DOCKER}.get(base)
    if files is None:
        files = draw(random_layer_layout())
    entries: list[tuple[tarfile.TarInfo, bytes | None]] = []
    damage = draw(st.integers(0, 3)) == 0
    for name, content in sorted(files.items()):
        if damage and draw(st.integers(0, 4)) == 0:
            continue  # drop a file of the base
        if damage and draw(st.integers(0, 4)) == 0:
            content = draw(st.binary(max_size=200))  # replace its bytes
        info = tarfile.TarInfo(name)
        info.size = len(content)
        entries.append((info, content))
    extra = draw(st.lists(members, max_size=4)) if draw(st.integers(0, 2)) == 0 else []
    for spec in extra:
        entries.insert(draw(st.integers(0, len(entries))), _entry(draw, spec))
    data = _tar(entries)
    if data and draw(st.integers(0, 5)) == 0:
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(data) - 1))
            data = data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if data and draw(st.integers(0, 5)) == 0:
        data = data[: draw(st.integers(0, len(data)))]
    if draw(st.booleans()):
        data = gzip.compress(data, mtime=0)
        if draw(st.integers(0, 7)) == 0:
            data = data[: draw(st.integers(0, len(data)))]
    return data


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for every example: each checks what it changed (examples must be fast)."""
    return new_home(tmp_path_factory.mktemp("fuzz") / "home")


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.function_scoped_fixture,  # conftest's git isolation: same for every example
    ],
)
@given(data=archives())
def test_import_of_generated_archives_imports_or_refuses_cleanly(
    fuzz_home: Path, data: bytes
) -> None:
    home = fuzz_home
    source = home.parent / "input.tar"
    source.write_bytes(data)
    before = snapshot(home)
    try:
        result = import_image(source, home, limits=LIMITS)
    except ImageImportError as exc:
        event(type(exc).__name__)
        assert exc.diagnostics()  # a message for people, naming the input
        assert str(source) in exc.diagnostics()
        assert snapshot(home) == before, "a refused import changed the store or the ledger"
        return
    event("imported")
    Store.for_home(home).verify(result.manifests[0])


def test_the_generator_reaches_both_outcomes() -> None:
    """The bases import as they are: the fuzzer starts from inputs that pass."""
    with tempfile.TemporaryDirectory() as tmp:
        home = new_home(Path(tmp) / "home")
        for files in (BASE_OCI, BASE_DOCKER):
            path = Path(tmp) / "base.tar"
            path.write_bytes(tar_of(_entries(files)))
            assert import_image(path, home, limits=LIMITS).digest.startswith("sha256:")


def _entries(files: dict[str, bytes]) -> list[tuple[tarfile.TarInfo, bytes | None]]:
    out: list[tuple[tarfile.TarInfo, bytes | None]] = []
    for name, content in sorted(files.items()):
        info = tarfile.TarInfo(name)
        info.size = len(content)
        out.append((info, content))
    return out


def test_tar_of_is_a_plain_tar() -> None:
    data = tar_of(_entries({"a": b"1"}))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        assert tar.getnames() == ["a"]
