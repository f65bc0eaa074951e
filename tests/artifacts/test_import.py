"""`immutrail artifact import`: OCI layouts and archives, docker save archives, attestations.

Real data: the slsa-verifier container layout (its layer blobs are omitted upstream, so it must
fail naming them) and its DSSE provenance (whose subject is another image: refused). Everything
else is generated here; the helpers at the top are shared with ``test_import_fuzz.py``.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.artifacts import oci
from immutrail.artifacts.builder import build
from immutrail.artifacts.errors import TagConflictError
from immutrail.artifacts.export import export_image
from immutrail.artifacts.import_errors import (
    ArchiveFormatError,
    AttestationError,
    AttestationSignatureError,
    AttestationSubjectError,
    BlobMismatchError,
    ImageImportError,
    ImportLimitError,
    ImportLimits,
    MediaTypeError,
    MissingBlobsError,
    UnsafeArchiveError,
    UnsafeLayerError,
)
from immutrail.artifacts.importer import EVENT_IMPORTED, import_image
from immutrail.artifacts.store import Store
from immutrail.cli import artifacts as artifacts_cli
from immutrail.crypto.canonical import canonical_json
from immutrail.crypto.dsse import sign_envelope
from immutrail.crypto.keys import generate_ed25519, key_id, public_key_pem
from immutrail.ledger.errors import NotInitializedError
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.storage.interface import EntryFilter

DATA = Path(__file__).parent.parent / "data" / "import"
REAL_LAYOUT = DATA / "slsa-verifier-container" / "container_workflow_dispatch"
REAL_INDEX = "sha256:234e2c830c2fb31ac5671789d22adfe44d30c3ee831d01beae5e237841a13122"
REAL_IMAGE = "sha256:d1fc0de9c6a33e502c488221644de1736c53d8ddb59b0e41b4946fb26af50e69"
REAL_DSSE = (
    REAL_LAYOUT
    / "blobs"
    / "sha256"
    / ("e163b472f2e5d66e5a2a45e26e020c51a0d2da7dc8b567b31fc2ebfd33dbc33a")
)
REAL_BUNDLE = (
    Path(__file__).parent.parent
    / "data"
    / "provenance"
    / "sigstore-bundle"
    / "bcr-MODULE.bazel.intoto.jsonl"
)
IN_TOTO = "application/vnd.in-toto+json"

# -- helpers: tars, layers, layouts, docker archives -----------------------------------------

Entry = tuple[tarfile.TarInfo, bytes | None]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def member(
    name: str,
    data: bytes = b"",
    *,
    kind: bytes = tarfile.REGTYPE,
    mode: int = 0o644,
    link: str = "",
) -> Entry:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
    if kind == tarfile.REGTYPE:
        info.size = len(data)
        return info, data
    return info, None


def tar_of(entries: Iterable[Entry]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def layer_of(files: Mapping[str, bytes | tuple[bytes, int]]) -> bytes:
    """An uncompressed layer tar: path -> content or (content, mode)."""
    entries = []
    for name, spec in files.items():
        data, mode = spec if isinstance(spec, tuple) else (spec, 0o644)
        entries.append(member(name, data, mode=mode))
    return tar_of(entries)


def config_for(layers: list[bytes], **extra: Any) -> bytes:
    diff_ids = [sha(gzip.decompress(x) if x[:2] == b"\x1f\x8b" else x) for x in layers]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": ["/bin/app"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        **extra,
    }
    return json.dumps(config, sort_keys=True).encode()


def descriptor(media_type: str, data: bytes, **more: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha(data), "size": len(data), **more}


def oci_layout(
    layers: list[bytes] | None = None,
    *,
    config: bytes | None = None,
    layer_type: str = oci.LAYER_TAR,
    index_entries: list[dict[str, Any]] | None = None,
    extra_blobs: Iterable[bytes] = (),
) -> tuple[dict[str, bytes], str]:
    """name -> bytes of an OCI layout holding one image; and the manifest digest."""
    layers = [layer_of({"bin/app": (b"#!/bin/sh\necho hi\n", 0o755)})] if layers is None else layers
    config = config_for(layers) if config is None else config
    manifest = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": descriptor(oci.CONFIG, config),
            "layers": [descriptor(layer_type, x) for x in layers],
        }
    )
    files = {f"blobs/sha256/{sha(b)[7:]}": b for b in [*layers, config, manifest, *extra_blobs]}
    entries = index_entries or [descriptor(oci.MANIFEST, manifest)]
    files["index.json"] = oci.encode(
        {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": entries}
    )
    files["oci-layout"] = b'{"imageLayoutVersion":"1.0.0"}'
    return files, sha(manifest)


def docker_archive(
    layers: list[bytes], tags: list[str] | None = None
) -> tuple[dict[str, bytes], bytes]:
    """name -> bytes of a `docker save` archive (the classic layout); and the config bytes."""
    config = config_for(layers)
    files: dict[str, bytes] = {f"{sha(config)[7:]}.json": config}
    names = []
    for position, layer in enumerate(layers):
        name = f"{position:064x}/layer.tar"
        files[name] = layer
        files[f"{position:064x}/VERSION"] = b"1.0"
        names.append(name)
    files["manifest.json"] = json.dumps(
        [{"Config": f"{sha(config)[7:]}.json", "RepoTags": tags or ["app:1"], "Layers": names}]
    ).encode()
    files["repositories"] = b"{}"
    return files, config


def write_tar(path: Path, files: Mapping[str, bytes], *, compress: bool = False) -> Path:
    data = tar_of(member(name, content) for name, content in sorted(files.items()))
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


def write_folder(root: Path, files: Mapping[str, bytes]) -> Path:
    for name, content in files.items():
        target = root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
    return root


def new_home(path: Path) -> Path:
    ledger, _ = init_ledger(path)
    ledger.close()
    return path


def snapshot(home: Path) -> tuple[int, list[str]]:
    """What import must not change on error: the ledger's size and every file of the store."""
    ledger = open_ledger(home)
    try:
        size = ledger.head().size
    finally:
        ledger.close()
    store = home / "store"
    files = (
        sorted(
            f"{p.relative_to(store)}:{p.stat().st_size}" for p in store.rglob("*") if p.is_file()
        )
        if store.exists()
        else []
    )
    return size, files


def events(home: Path, kind: str = EVENT_IMPORTED) -> list[Any]:
    ledger = open_ledger(home)
    try:
        return [parse_entry(row.data) for row in ledger.entries(EntryFilter(type=kind))]
    finally:
        ledger.close()


def refused(
    home: Path, path: Path, error: type[Exception], *fragments: str, **kwargs: Any
) -> ImageImportError:
    """Import must fail with ``error`` whose message holds every fragment, writing nothing."""
    before = snapshot(home)
    with pytest.raises(error) as caught:
        import_image(path, home, **kwargs)
    assert isinstance(caught.value, ImageImportError)
    message = caught.value.diagnostics()
    for fragment in fragments:
        assert fragment in message, message
    assert snapshot(home) == before
    return caught.value


def statement_about(digest: str, predicate_type: str = "https://example.org/test/v1") -> bytes:
    return canonical_json(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "image", "digest": {"sha256": digest.removeprefix("sha256:")}}],
            "predicateType": predicate_type,
            "predicate": {"ok": True},
        }
    )


# -- round trips ---------------------------------------------------------------------------


def test_round_trip_of_our_export(repo: Path, home: Path, tmp_path: Path) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    archive = export_image(Store.for_home(home), "app:1", tmp_path / "app.tar").path
    other = new_home(tmp_path / "other")

    result = import_image(archive, other, tag="app:1")

    assert result.digest == built.digest and result.source_kind == "oci-archive"
    assert result.source_tags == ("app:1",) and result.warnings == ()
    store = Store.for_home(other)
    store.verify(built.digest)
    assert store.resolve("app:1").digest == built.digest
    kinds = {d.artifact_type for d in store.referrers(built.digest)}
    assert kinds == {"application/vnd.cyclonedx+json", IN_TOTO}
    (event,) = events(other)
    assert event.subject == built.digest and event.actor == "user:test"
    assert event.payload["source_kind"] == "oci-archive"
    assert event.payload["source_digest"] == sha(archive.read_bytes())
    assert event.payload["manifests"] == [built.digest]
    assert len(event.payload["attachments"]) == 2

    # importing the same image again (here: the unpacked folder, gzip) is idempotent
    folder = tmp_path / "layout"
    with tarfile.open(archive) as tar:
        tar.extractall(folder, filter="data")
    assert import_image(folder, other).digest == built.digest
    gz = tmp_path / "app.tar.gz"
    gz.write_bytes(gzip.compress(archive.read_bytes()))
    again = import_image(gz, new_home(tmp_path / "third"))
    assert again.digest == built.digest and again.source_kind == "oci-archive"


def test_docker_save_archive_becomes_a_deterministic_oci_image(tmp_path: Path) -> None:
    layers = [
        layer_of({"bin/app": (b"binary", 0o755), "etc/app.conf": b"x=1\n"}),
        layer_of({"usr/bin/su": (b"su", 0o4755), "srv/data": b"data"}),
    ]
    files, config = docker_archive(layers, ["example/app:1.0"])
    archive = write_tar(tmp_path / "docker.tar", files)
    home = new_home(tmp_path / "home")

    result = import_image(archive, home)

    expected = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "config": descriptor(oci.CONFIG, config),
            "layers": [descriptor(oci.LAYER_TAR, x) for x in layers],
        }
    )
    assert result.digest == sha(expected) and result.source_kind == "docker-archive"
    assert result.source_tags == ("example/app:1.0",)
    store = Store.for_home(home)
    assert store.read_blob(sha(expected)) == expected
    assert store.read_blob(sha(config)) == config  # the original config bytes: docker's image id
    store.verify(result.digest)
    (warning,) = result.warnings
    assert (warning.kind, warning.path, warning.mode) == ("setuid", "usr/bin/su", 0o4755)
    assert warning.layer == sha(layers[1])
    (event,) = events(home)
    assert event.payload["warnings"] == [warning.to_dict()]
    assert event.payload["source_tags"] == ["example/app:1.0"]
    # the same archive gives the same digest in another home, and gzip does not change it
    gz = write_tar(tmp_path / "docker.tar.gz", files, compress=True)
    assert import_image(gz, new_home(tmp_path / "h2")).digest == result.digest


def test_docker_save_with_a_symlinked_duplicate_layer(tmp_path: Path) -> None:
    """`docker save` writes a layer it already wrote as a symlink to the first copy."""
    layer = layer_of({"a": b"1"})
    files, _ = docker_archive([layer, layer])
    entries = [member(n, c) for n, c in sorted(files.items()) if not n.startswith(f"{1:064x}/")]
    entries.append(member(f"{1:064x}", kind=tarfile.DIRTYPE, mode=0o755))
    entries.append(
        member(f"{1:064x}/layer.tar", kind=tarfile.SYMTYPE, link=f"../{0:064x}/layer.tar")
    )
    archive = tmp_path / "dup.tar"
    archive.write_bytes(tar_of(entries))
    result = import_image(archive, new_home(tmp_path / "home"))
    manifest = Store.for_home(tmp_path / "home").get_manifest(result.digest)
    assert [x["digest"] for x in manifest["layers"]] == [sha(layer), sha(layer)]


def test_image_given_as_an_index(tmp_path: Path) -> None:
    """An index and its manifests are imported; attestations may name the index or a manifest."""
    files, manifest_digest = oci_layout()
    manifest_bytes = files[f"blobs/sha256/{manifest_digest[7:]}"]
    index = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.INDEX,
            "manifests": [
                descriptor(
                    oci.MANIFEST, manifest_bytes, platform={"os": "linux", "architecture": "amd64"}
                )
            ],
        }
    )
    files[f"blobs/sha256/{sha(index)[7:]}"] = index
    files["index.json"] = oci.encode(
        {"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": [descriptor(oci.INDEX, index)]}
    )
    layout = write_folder(tmp_path / "layout", files)
    on_index = tmp_path / "index.intoto.json"
    on_index.write_bytes(statement_about(sha(index)))
    on_manifest = tmp_path / "manifest.intoto.json"
    on_manifest.write_bytes(statement_about(manifest_digest))
    home = new_home(tmp_path / "home")

    result = import_image(layout, home, attestations=[on_index, on_manifest], tag="multi:1")

    assert result.digest == sha(index) and result.media_type == oci.INDEX
    assert result.manifests == (manifest_digest,) and result.source_kind == "oci-layout"
    first, second = result.attestations
    assert first.subject.digest == sha(index) and second.subject.digest == manifest_digest
    assert not first.verified and "bare in-toto statement" in first.verification
    store = Store.for_home(home)
    assert store.resolve("multi:1").descriptor.media_type == oci.INDEX
    assert [d.digest for d in store.referrers(sha(index))] == [first.manifest_digest]
    assert [d.digest for d in store.referrers(manifest_digest)] == [second.manifest_digest]
    store.verify_blob(manifest_digest)


# -- attestations --------------------------------------------------------------------------


def _docker_image(tmp_path: Path) -> tuple[Path, str]:
    files, _ = docker_archive([layer_of({"app": b"v1"})])
    archive = write_tar(tmp_path / "img.tar", files)
    digest = import_image(archive, new_home(tmp_path / "probe")).digest
    return archive, digest


def test_dsse_attestation_verified_with_the_given_key(tmp_path: Path) -> None:
    archive, digest = _docker_image(tmp_path)
    signer = generate_ed25519()
    envelope = tmp_path / "prov.dsse.json"
    envelope.write_bytes(canonical_json(sign_envelope(signer, IN_TOTO, statement_about(digest))))
    pem = tmp_path / "key.pem"
    pem.write_text(public_key_pem(signer.public_key()))
    home = new_home(tmp_path / "home")

    unverified = import_image(archive, home, attestations=[envelope])
    assert unverified.attestations[0].verification == "unverified: no --key given"

    other = new_home(tmp_path / "other")
    result = import_image(archive, other, attestations=[envelope], keys=[pem])
    (attached,) = result.attestations
    keyid = key_id(signer.public_key())
    assert attached.verified and attached.key == keyid
    assert attached.parsed.kind == "dsse" and attached.subject.digest == digest
    store = Store.for_home(other)
    (referrer,) = store.referrers(digest)
    assert referrer.artifact_type == IN_TOTO
    manifest, blobs = store.image_blobs(referrer.digest)
    assert manifest["subject"]["digest"] == digest
    assert store.read_blob(blobs[1].digest) == envelope.read_bytes()  # stored byte for byte
    (event,) = events(other)
    recorded = event.payload["attestations"][0]
    assert recorded["verified"] is True and recorded["key"] == keyid
    assert recorded["blob"] == sha(envelope.read_bytes())


def test_forged_dsse_signature_is_refused(tmp_path: Path) -> None:
    archive, digest = _docker_image(tmp_path)
    envelope = sign_envelope(generate_ed25519(), IN_TOTO, statement_about(digest))
    stranger = tmp_path / "stranger.pem"
    stranger.write_text(public_key_pem(generate_ed25519().public_key()))
    wrong_key = tmp_path / "wrong-key.dsse.json"
    wrong_key.write_bytes(canonical_json(envelope))
    home = new_home(tmp_path / "home")
    refused(
        home,
        archive,
        AttestationSignatureError,
        "wrong-key.dsse.json",
        "does not verify",
        attestations=[wrong_key],
        keys=[stranger],
    )
    tampered = dict(envelope)
    tampered["payload"] = base64.b64encode(statement_about(digest, "https://x.org/y")).decode()
    altered = tmp_path / "altered.dsse.json"
    altered.write_bytes(canonical_json(tampered))
    signer_pem = tmp_path / "signer.pem"
    refused(
        home,
        archive,
        AttestationSignatureError,
        "altered.dsse.json",
        attestations=[altered],
        keys=[stranger],
    )
    del signer_pem


def test_real_provenance_about_another_image_is_refused(tmp_path: Path) -> None:
    """slsa-github-generator's DSSE provenance names the index 234e2c83…, not our image."""
    archive, digest = _docker_image(tmp_path)
    home = new_home(tmp_path / "home")
    error = refused(
        home,
        archive,
        AttestationSubjectError,
        REAL_DSSE.name,
        REAL_INDEX,
        digest,
        attestations=[REAL_DSSE],
    )
    assert error.source == str(REAL_DSSE)
    refused(
        home,
        archive,
        AttestationSubjectError,
        "bcr-MODULE.bazel.intoto.jsonl",
        attestations=[REAL_BUNDLE],
    )


def test_forged_sigstore_bundle_is_refused(tmp_path: Path) -> None:
    """Real verification material around an envelope it never signed: refused, nothing written."""
    archive, digest = _docker_image(tmp_path)
    real = json.loads(REAL_BUNDLE.read_text())
    envelope = sign_envelope(generate_ed25519(), IN_TOTO, statement_about(digest))
    bundle = {
        "mediaType": real["mediaType"],
        "verificationMaterial": real["verificationMaterial"],
        "dsseEnvelope": envelope,
    }
    path = tmp_path / "image.sigstore.json"
    path.write_text(json.dumps(bundle))
    refused(
        new_home(tmp_path / "home"),
        archive,
        AttestationSignatureError,
        "Sigstore bundle does not verify",
        attestations=[path],
    )


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"not json", "not valid JSON"),
        (b'{"hello": 1}', "neither a DSSE envelope"),
        (b'{"payloadType": "text/plain", "payload": "", "signatures": []}', "not an in-toto"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "subject": []}', "subject"),
        (
            b'{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", '
            b'"messageSignature": {}}',
            "signs a file",
        ),
    ],
)
def test_malformed_attestations(tmp_path: Path, content: bytes, fragment: str) -> None:
    archive, _ = _docker_image(tmp_path)
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    refused(
        new_home(tmp_path / "home"),
        archive,
        AttestationError,
        "bad.json",
        fragment,
        attestations=[path],
    )


# -- the real slsa-verifier layout ---------------------------------------------------------


def test_real_layout_with_omitted_layer_blobs_names_them(tmp_path: Path) -> None:
    manifest = json.loads((REAL_LAYOUT / "blobs" / "sha256" / REAL_IMAGE[7:]).read_bytes())
    wanted = [layer["digest"] for layer in manifest["layers"]]
    omitted = {
        line.split()[0]
        for line in (DATA / "slsa-verifier-container" / "OMITTED_LAYER_BLOBS.txt")
        .read_text()
        .splitlines()
        if line.startswith("sha256:")
    }
    assert len(wanted) == 12 and set(wanted) == omitted  # the collection notes say 11: it is 12
    home = new_home(tmp_path / "home")

    error = refused(
        home, REAL_LAYOUT, MissingBlobsError, f"manifest {REAL_IMAGE} points to missing blobs (12)"
    )

    assert isinstance(error, MissingBlobsError)
    assert error.manifest == REAL_IMAGE and list(error.missing) == wanted
    assert not (home / "store").exists()
    # the same as an archive, and given with its own (real) provenance: still refused first
    archive = write_tar(
        tmp_path / "real.tar",
        {
            str(p.relative_to(REAL_LAYOUT)): p.read_bytes()
            for p in REAL_LAYOUT.rglob("*")
            if p.is_file()
        },
    )
    refused(home, archive, MissingBlobsError, REAL_IMAGE, *wanted, attestations=[REAL_DSSE])


# -- bad input: the archive ----------------------------------------------------------------


def _archive(tmp_path: Path, extra: list[Entry], files: Mapping[str, bytes] | None = None) -> Path:
    files = files if files is not None else oci_layout()[0]
    path = tmp_path / "bad.tar"
    path.write_bytes(tar_of([*(member(n, c) for n, c in sorted(files.items())), *extra]))
    return path


@pytest.mark.parametrize(
    ("extra", "error", "fragment"),
    [
        ([member("../evil", b"x")], UnsafeArchiveError, "'..'"),
        ([member("blobs/../../evil", b"x")], UnsafeArchiveError, "'..'"),
        ([member("/etc/passwd", b"x")], UnsafeArchiveError, "absolute"),
        (
            [member("blobs/sha256/link", kind=tarfile.SYMTYPE, link="../../../etc/passwd")],
            UnsafeArchiveError,
            "outside the archive",
        ),
        (
            [member("evil", kind=tarfile.SYMTYPE, link="/etc/shadow")],
            UnsafeArchiveError,
            "absolute path",
        ),
        (
            [member("hard", kind=tarfile.LNKTYPE, link="../../etc/passwd")],
            UnsafeArchiveError,
            "'..'",
        ),
        (
            [member("hard", kind=tarfile.LNKTYPE, link="nothing")],
            UnsafeArchiveError,
            "not an earlier regular file",
        ),
        ([member("dev/null", kind=tarfile.CHRTYPE)], UnsafeArchiveError, "device"),
        ([member("dev/sda", kind=tarfile.BLKTYPE)], UnsafeArchiveError, "device"),
        ([member("pipe", kind=tarfile.FIFOTYPE)], UnsafeArchiveError, "FIFO"),
        ([member("index.json", b"{}")], UnsafeArchiveError, "appears twice"),
        ([member("./oci-layout", b"{}")], UnsafeArchiveError, "appears twice"),
        ([member("loop", kind=tarfile.SYMTYPE, link="loop")], UnsafeArchiveError, "levels"),
    ],
)
def test_unsafe_archive_entries(
    tmp_path: Path, extra: list[Entry], error: type[Exception], fragment: str
) -> None:
    path = _archive(tmp_path, extra)
    home = new_home(tmp_path / "home")
    raised = refused(home, path, error, "bad.tar", fragment)
    assert raised.entry == extra[0][0].name


def test_tar_path_traversal_writes_nothing_outside(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    path = _archive(tmp_path, [member("../../escaped", b"pwned")])
    refused(new_home(tmp_path / "home"), path, UnsafeArchiveError, "../../escaped")
    assert not any(p.name == "escaped" for p in tmp_path.parent.rglob("escaped"))


def test_blob_content_not_matching_its_digest(tmp_path: Path) -> None:
    files, digest = oci_layout()
    name = f"blobs/sha256/{digest[7:]}"
    files[name] = files[name].replace(b'"schemaVersion":2', b'"schemaVersion":2 ')
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        BlobMismatchError,
        name,
        "does not match its digest",
    )


def test_blob_size_not_matching_its_descriptor(tmp_path: Path) -> None:
    layer = layer_of({"a": b"1"})
    files, digest = oci_layout([layer])
    index = json.loads(files["index.json"])
    index["manifests"][0]["size"] += 1
    files["index.json"] = json.dumps(index).encode()
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        BlobMismatchError,
        digest,
        "bytes, but index.json says",
    )


def test_manifest_pointing_to_missing_blobs(tmp_path: Path) -> None:
    layers = [layer_of({"a": b"1"}), layer_of({"b": b"2"})]
    files, digest = oci_layout(layers)
    for layer in layers:
        del files[f"blobs/sha256/{sha(layer)[7:]}"]
    error = refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        MissingBlobsError,
        digest,
        sha(layers[0]),
        sha(layers[1]),
    )
    assert isinstance(error, MissingBlobsError) and error.missing == (
        sha(layers[0]),
        sha(layers[1]),
    )


@pytest.mark.parametrize(
    ("layer_type", "fragment"),
    [
        ("application/vnd.example.thing", "not an OCI or Docker image layer"),
        ("application/vnd.oci.image.layer.v1.tar+zstd", "zstd"),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar", "not an OCI or Docker"),
    ],
)
def test_media_types_that_are_not_image_types(
    tmp_path: Path, layer_type: str, fragment: str
) -> None:
    files, _ = oci_layout(layer_type=layer_type)
    refused(new_home(tmp_path / "home"), _archive(tmp_path, [], files), MediaTypeError, fragment)


def test_manifest_media_type_not_an_image_type(tmp_path: Path) -> None:
    files, digest = oci_layout()
    index = json.loads(files["index.json"])
    index["manifests"][0]["mediaType"] = "application/vnd.example.manifest+json"
    files["index.json"] = json.dumps(index).encode()
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        MediaTypeError,
        digest,
        "application/vnd.example.manifest+json",
    )


def test_oversized_member(tmp_path: Path) -> None:
    path = _archive(tmp_path, [member("big", b"x" * 20_000)])
    refused(
        new_home(tmp_path / "home"),
        path,
        ImportLimitError,
        "'big'",
        "16384-byte limit",
        limits=ImportLimits(max_blob_bytes=16384),
    )
    refused(
        new_home(tmp_path / "h2"),
        path,
        ImportLimitError,
        "more than 30000 bytes",
        limits=ImportLimits(max_total_bytes=30_000),
    )


def test_too_many_members_and_too_long_names(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    path = _archive(tmp_path, [member(f"junk/{i}", b"") for i in range(20)])
    refused(
        home, path, ImportLimitError, "more than 10 entries", limits=ImportLimits(max_members=10)
    )
    long_name = _archive(tmp_path, [member("a" * 300, b"")])
    refused(
        home,
        long_name,
        ImportLimitError,
        "over the 100-byte limit",
        limits=ImportLimits(max_name_bytes=100),
    )


@pytest.mark.parametrize("keep", [0.1, 0.3, 0.5, 0.7, 0.75])
def test_truncated_archive(tmp_path: Path, keep: float) -> None:
    """Cut inside an entry: "truncated"; cut between entries: what is missing is named."""
    files, _ = oci_layout([layer_of({"f": bytes(range(256)) * 64})])
    whole = tar_of(member(n, c) for n, c in sorted(files.items()))
    path = tmp_path / "cut.tar"
    path.write_bytes(whole[: int(len(whole) * keep) // 512 * 512 + 100])
    refused(new_home(tmp_path / "home"), path, ArchiveFormatError, "cut.tar", "truncated")


def test_truncated_gzip_archive(tmp_path: Path) -> None:
    files, _ = oci_layout()
    data = gzip.compress(tar_of(member(n, c) for n, c in sorted(files.items())))
    path = tmp_path / "cut.tar.gz"
    path.write_bytes(data[: len(data) - 20])
    refused(new_home(tmp_path / "home"), path, ArchiveFormatError, "cut.tar.gz", "truncated")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"BZh91AY&SY", "bzip2"),
        (b"\x28\xb5\x2f\xfd\x00\x00", "zstd"),
        (b"this is not a tar archive at all" * 40, "not a readable tar"),
        (b"", "empty file"),
        (bytes(10240), "no entries"),
    ],
)
def test_not_an_archive(tmp_path: Path, content: bytes, fragment: str) -> None:
    path = tmp_path / "thing.tar"
    path.write_bytes(content)
    refused(new_home(tmp_path / "home"), path, ArchiveFormatError, fragment)


def test_neither_layout_nor_docker(tmp_path: Path) -> None:
    path = write_tar(tmp_path / "x.tar", {"hello.txt": b"hi"})
    refused(new_home(tmp_path / "home"), path, ArchiveFormatError, "neither an OCI image layout")


def test_more_than_one_image(tmp_path: Path) -> None:
    one, first = oci_layout([layer_of({"a": b"1"})])
    two, second = oci_layout([layer_of({"b": b"2"})])
    files = {**one, **two}
    files["index.json"] = oci.encode(
        {
            "schemaVersion": 2,
            "manifests": [
                descriptor(oci.MANIFEST, one[f"blobs/sha256/{first[7:]}"]),
                descriptor(oci.MANIFEST, two[f"blobs/sha256/{second[7:]}"]),
            ],
        }
    )
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        ArchiveFormatError,
        "exactly one image",
        first,
        second,
    )
    docker, _ = docker_archive([layer_of({"a": b"1"})])
    entries = json.loads(docker["manifest.json"])
    docker["manifest.json"] = json.dumps(entries * 2).encode()
    refused(
        new_home(tmp_path / "h2"),
        write_tar(tmp_path / "d.tar", docker),
        ArchiveFormatError,
        "describes 2 images",
    )


def test_duplicate_json_keys_in_index(tmp_path: Path) -> None:
    files, _ = oci_layout()
    files["index.json"] = b'{"schemaVersion": 2, "schemaVersion": 2, "manifests": []}'
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        ArchiveFormatError,
        "duplicate JSON key",
        "index.json",
    )


def test_folder_with_an_escaping_symlink(tmp_path: Path) -> None:
    files, _ = oci_layout()
    layout = write_folder(tmp_path / "layout", files)
    (layout / "blobs" / "sha256" / "evil").symlink_to("/etc/passwd")
    refused(
        new_home(tmp_path / "home"),
        layout,
        UnsafeArchiveError,
        "blobs/sha256/evil",
        "absolute path",
    )


# -- bad input: the layers -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "fragment"),
    [
        ([member("../../etc/cron.d/x", b"* * * * * root sh")], "'..' component"),
        ([member("/etc/passwd", b"root::0:0")], "absolute path"),
        ([member("lib", kind=tarfile.SYMTYPE, link="../../../../etc")], "points outside"),
        (
            [member("x", kind=tarfile.SYMTYPE, link="/etc"), member("x/passwd", b"root")],
            "written through the symbolic link",
        ),
        ([member("h", kind=tarfile.LNKTYPE, link="missing")], "hard link"),
        ([member("dev/kmem", kind=tarfile.CHRTYPE)], "device nodes"),
        ([member("same", b"1"), member("same", b"2")], "appears twice"),
    ],
)
def test_unsafe_layer_contents(tmp_path: Path, entries: list[Entry], fragment: str) -> None:
    layer = tar_of(entries)
    files, digest = oci_layout([layer])
    error = refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        UnsafeLayerError,
        fragment,
        sha(layer),
        digest,
    )
    assert error.entry == entries[-1][0].name


def test_unsafe_layer_in_a_docker_archive_names_the_layer_file(tmp_path: Path) -> None:
    layer = tar_of([member("../x", b"1")])
    files, _ = docker_archive([layer_of({"ok": b"1"}), layer])
    path = write_tar(tmp_path / "docker.tar", files)
    refused(new_home(tmp_path / "home"), path, UnsafeLayerError, f"{1:064x}/layer.tar", "'../x'")


def test_truncated_layer(tmp_path: Path) -> None:
    whole = layer_of({"big": bytes(4096)})
    layer = whole[:1500]
    files, _ = oci_layout([layer], config=config_for([whole]))
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        ArchiveFormatError,
        sha(layer),
        "not a readable tar",
    )


def test_config_diff_ids_must_match_the_layers(tmp_path: Path) -> None:
    layer = layer_of({"a": b"1"})
    files, _ = oci_layout([layer], config=config_for([layer_of({"a": b"2"})]))
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        BlobMismatchError,
        "diff_ids",
        sha(layer),
    )


def test_gzip_layers_and_setgid_warning(tmp_path: Path) -> None:
    layer = gzip.compress(layer_of({"usr/bin/wall": (b"w", 0o2755)}), mtime=0)
    files, digest = oci_layout([layer], layer_type=oci.LAYER_GZIP)
    result = import_image(_archive(tmp_path, [], files), new_home(tmp_path / "home"))
    assert result.digest == digest
    assert [(w.kind, w.path) for w in result.warnings] == [("setgid", "usr/bin/wall")]


# -- tags, home, CLI -----------------------------------------------------------------------


def test_tag_conflict_and_uninitialised_home(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    first = write_folder(tmp_path / "a", oci_layout([layer_of({"a": b"1"})])[0])
    second = write_folder(tmp_path / "b", oci_layout([layer_of({"b": b"2"})])[0])
    import_image(first, home, tag="app:1")
    before = snapshot(home)
    with pytest.raises(TagConflictError):
        import_image(second, home, tag="app:1")
    assert snapshot(home) == before
    nowhere = tmp_path / "not-a-home"
    with pytest.raises(NotInitializedError):
        import_image(first, nowhere)
    assert not (nowhere / "store").exists()


cli = typer.Typer()
cli.add_typer(artifacts_cli.app, name="artifact")
runner = CliRunner()


def test_cli_import_json_and_text(tmp_path: Path) -> None:
    home = new_home(tmp_path / "home")
    files, _ = docker_archive([layer_of({"usr/bin/su": (b"su", 0o4755)})])
    archive = write_tar(tmp_path / "img.tar", files)
    probe = import_image(archive, new_home(tmp_path / "probe")).digest
    envelope = tmp_path / "statement.dsse.json"
    envelope.write_text(
        json.dumps(sign_envelope(generate_ed25519(), IN_TOTO, statement_about(probe)))
    )
    args = ["artifact", "import", str(archive), "--attestation", str(envelope), "--home", str(home)]
    result = runner.invoke(cli, [*args, "--tag", "app:1", "--format", "json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["schema_version"] == 1 and data["digest"] == probe and data["tag"] == "app:1"
    assert data["attestations"][0]["verification"] == "unverified: no --key given"
    assert data["warnings"][0]["path"] == "usr/bin/su"

    text = runner.invoke(cli, args)
    assert text.exit_code == 0, text.stderr
    assert "UNVERIFIED: NO --KEY GIVEN" in text.stdout and "setuid file /usr/bin/su" in text.stdout

    bad = runner.invoke(cli, ["artifact", "import", str(REAL_LAYOUT), "--home", str(home)])
    assert bad.exit_code == 2
    assert "missing blobs" in bad.stderr and REAL_IMAGE in bad.stderr


def test_docker_config_whose_name_is_not_its_digest(tmp_path: Path) -> None:
    files, config = docker_archive([layer_of({"a": b"1"})])
    name = f"{sha(config)[7:]}.json"
    files[name] = config.replace(b"amd64", b"arm64")
    refused(
        new_home(tmp_path / "home"),
        write_tar(tmp_path / "d.tar", files),
        BlobMismatchError,
        name,
        "does not match its digest",
    )


def test_referrer_of_an_image_not_in_the_input(tmp_path: Path) -> None:
    stranger = "sha256:" + "ab" * 32
    empty = oci.EMPTY_JSON
    statement = statement_about(stranger)
    referrer = oci.encode(
        {
            "schemaVersion": 2,
            "mediaType": oci.MANIFEST,
            "artifactType": IN_TOTO,
            "config": descriptor(oci.EMPTY, empty),
            "layers": [descriptor(IN_TOTO, statement)],
            "subject": {"mediaType": oci.MANIFEST, "digest": stranger, "size": 1},
        }
    )
    files, digest = oci_layout(extra_blobs=[empty, statement, referrer])
    manifest = files[f"blobs/sha256/{digest[7:]}"]
    files["index.json"] = oci.encode(
        {
            "schemaVersion": 2,
            "manifests": [descriptor(oci.MANIFEST, manifest), descriptor(oci.MANIFEST, referrer)],
        }
    )
    refused(
        new_home(tmp_path / "home"),
        _archive(tmp_path, [], files),
        ArchiveFormatError,
        sha(referrer),
        stranger,
        "not in the input",
    )


def test_indexes_nested_too_deep(tmp_path: Path) -> None:
    files, digest = oci_layout()
    inner = descriptor(oci.MANIFEST, files[f"blobs/sha256/{digest[7:]}"])
    for _ in range(3):
        index = oci.encode({"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": [inner]})
        files[f"blobs/sha256/{sha(index)[7:]}"] = index
        inner = descriptor(oci.INDEX, index)
    files["index.json"] = oci.encode({"schemaVersion": 2, "manifests": [inner]})
    path = _archive(tmp_path, [], files)
    refused(
        new_home(tmp_path / "home"),
        path,
        ImportLimitError,
        "nested deeper than 2",
        limits=ImportLimits(max_index_depth=2),
    )
    assert import_image(path, new_home(tmp_path / "h2")).manifests == (digest,)


def test_folder_with_a_fifo(tmp_path: Path) -> None:
    layout = write_folder(tmp_path / "layout", oci_layout()[0])
    os.mkfifo(layout / "pipe")
    refused(new_home(tmp_path / "home"), layout, UnsafeArchiveError, "'pipe'", "only files")
