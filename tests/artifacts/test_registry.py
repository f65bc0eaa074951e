"""Push and pull against a real registry (Debian's docker-registry, distribution 2.8).

The registry runs on a loopback port for this module (``services/registry.py``); the tests skip
when it is not installed, except under CI=true where it must be (Debian package
``docker-registry``). What distribution 2.8 cannot show (the referrers API, token auth, a
registry that lies in its answers) runs against the small fake in ``services/fake_registry.py``.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from immutrail.artifacts import oci
from immutrail.artifacts.attach import attach_and_record
from immutrail.artifacts.builder import BuildResult, build
from immutrail.artifacts.errors import (
    ArtifactInputError,
    BlobVerificationError,
    NotFoundError,
    TagConflictError,
)
from immutrail.artifacts.registry import (
    EVENT_PULLED,
    EVENT_PUSHED,
    Credentials,
    RegistryAuthError,
    RegistryContentError,
    RegistryUnreachableError,
    pull,
    push,
    referrers_tag,
)
from immutrail.artifacts.registry_client import parse_challenge
from immutrail.artifacts.registry_ref import Reference
from immutrail.artifacts.store import Store
from immutrail.cli import artifacts as artifacts_cli
from immutrail.ledger.home import init_ledger, open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import APP_FILES, in_ci, make_repo, need_tool, set_compression
from .services.fake_registry import FakeRegistry, running_fake
from .services.registry import Registry, ServiceError, find_binary, free_port, running_registry

pytestmark = pytest.mark.timeout(300)

NOTE_TYPE = "application/vnd.example.note.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    binary = find_binary()
    if binary is None:
        if in_ci():
            pytest.fail("docker-registry is not installed and CI=true", pytrace=False)
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    try:
        with running_registry(tmp_path_factory.mktemp("registry"), binary) as server:
            yield server
    except ServiceError as exc:
        if in_ci():
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture
def own_registry(registry: Registry, tmp_path: Path) -> Iterator[Registry]:
    """A registry of the test's own: blobs are shared across repositories, so tampering with
    one in the module's registry would spoil every later test that pushes the same layer."""
    with running_registry(tmp_path / "own-registry") as server:
        yield server


def new_home(tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    ledger, _ = init_ledger(path)
    ledger.close()
    return path


def build_with_note(repo: Path, home: Path, tag: str = "app:1") -> tuple[BuildResult, str]:
    """An image with three referrers: its SBOM, its provenance, and a note attached here."""
    result = build(repo / "image.yaml", home, tag=tag)
    ledger = open_ledger(home)
    try:
        note = attach_and_record(
            Store.for_home(home),
            ledger,
            "user:test",
            result.digest,
            NOTE_TYPE,
            b'{"note": "reviewed"}',
            "application/json",
            {"org.example.reviewer": "bob"},
        )
    finally:
        ledger.close()
    return result, note.digest


def image_and_referrer_blobs(built: BuildResult) -> int:
    """Config and layers, one payload per referrer, and the empty config they all share."""
    return 1 + len(built.layers) + 3 + 1


def events(home: Path, kind: str) -> list[dict[str, Any]]:
    ledger = open_ledger(home)
    try:
        return [json.loads(row.data) for row in ledger.entries(EntryFilter(type=kind))]
    finally:
        ledger.close()


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under a store (or any folder), for "nothing changed" checks."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def http_json(url: str, accept: str = oci.INDEX) -> Any:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def referrer_digests(store: Store, digest: str) -> set[str]:
    return {d.digest for d in store.referrers(digest)}


# -- the real registry ---------------------------------------------------------------------------


@pytest.mark.registry
def test_push_then_pull_into_a_fresh_store(
    registry: Registry, repo: Path, home: Path, tmp_path: Path
) -> None:
    built, note = build_with_note(repo, home)
    source = Store.for_home(home)
    expected_referrers = referrer_digests(source, built.digest)
    assert note in expected_referrers and len(expected_referrers) == 3

    ledger = open_ledger(home)
    try:
        pushed = push(
            source, "app:1", f"{registry.host}/team/app:1", ledger=ledger, actor="user:test"
        )
    finally:
        ledger.close()
    assert pushed.digest == built.digest
    assert pushed.reference == f"{registry.host}/team/app:1@{built.digest}"
    assert pushed.blobs_present == 0 and pushed.blobs_uploaded == image_and_referrer_blobs(built)
    assert set(pushed.referrers) == expected_referrers
    assert pushed.referrers_method == "tag-schema"  # distribution 2.8 has no referrers API

    fallback = http_json(
        f"http://{registry.host}/v2/team/app/manifests/{referrers_tag(built.digest)}"
    )
    assert fallback["mediaType"] == oci.INDEX
    assert {d["digest"] for d in fallback["manifests"]} == expected_referrers
    note_entry = next(d for d in fallback["manifests"] if d["digest"] == note)
    assert note_entry["artifactType"] == NOTE_TYPE
    assert note_entry["annotations"] == {"org.example.reviewer": "bob"}

    [event] = events(home, EVENT_PUSHED)
    assert event["subject"] == built.digest and event["actor"] == "user:test"
    assert event["payload"]["reference"] == pushed.reference
    assert event["payload"]["referrers_count"] == 3

    other = new_home(tmp_path, "other")
    target = Store.for_home(other, create=True)
    ledger = open_ledger(other)
    try:
        pulled = pull(
            target, f"{registry.host}/team/app:1", tag="app:1", ledger=ledger, actor="user:bob"
        )
    finally:
        ledger.close()
    assert pulled.digest == built.digest and pulled.tag == "app:1"
    assert pulled.media_type == oci.MANIFEST
    assert pulled.referrers_method == "tag-schema"
    assert set(pulled.referrers) == expected_referrers
    assert target.read_blob(built.digest) == source.read_blob(built.digest)
    assert target.resolve("app:1").digest == built.digest
    target.verify(built.digest)
    assert referrer_digests(target, built.digest) == expected_referrers
    [note_descriptor] = target.referrers(built.digest, NOTE_TYPE)
    assert note_descriptor.annotations == {"org.example.reviewer": "bob"}
    for digest in expected_referrers:
        target.verify(digest)

    [event] = events(other, EVENT_PULLED)
    assert event["subject"] == built.digest and event["actor"] == "user:bob"
    assert event["payload"]["reference"] == f"{registry.host}/team/app:1"
    assert event["payload"]["resolved"] == f"{registry.host}/team/app:1@{built.digest}"
    assert event["payload"]["referrers_count"] == 3


@pytest.mark.registry
def test_uncompressed_image_round_trip_with_its_referrers(
    registry: Registry, plain_repo: Path, home: Path, tmp_path: Path
) -> None:
    """An image of uncompressed layers goes to the registry and back byte for byte, its layers
    served as they were pushed, its SBOM and provenance along."""
    built = build(plain_repo / "plain.yaml", home, tag="plain:1")
    source = Store.for_home(home)
    pushed = push(source, "plain:1", f"{registry.host}/team/plain:1")
    assert pushed.digest == built.digest
    assert pushed.blobs_uploaded == 1 + len(built.layers) + 2 + 1
    served = http_json(f"http://{registry.host}/v2/team/plain/manifests/1", accept=oci.MANIFEST)
    assert [layer["mediaType"] for layer in served["layers"]] == [oci.LAYER_TAR] * 2
    layer = built.layers[0]
    with urllib.request.urlopen(
        f"http://{registry.host}/v2/team/plain/blobs/{layer.digest}", timeout=10
    ) as response:
        assert response.read() == source.read_blob(layer.digest)

    target = Store.for_home(new_home(tmp_path, "other"), create=True)
    pulled = pull(target, f"{registry.host}/team/plain:1", tag="plain:1")
    assert pulled.digest == built.digest
    assert set(pulled.referrers) == {built.sbom, built.provenance}
    target.verify(built.digest)
    for digest in (built.sbom, built.provenance):
        target.verify(digest)
    _, blobs = target.image_blobs(built.digest)
    assert [d.media_type for d in blobs[1:]] == [oci.LAYER_TAR] * 2
    assert {d.digest: target.read_blob(d.digest) for d in blobs} == {
        d.digest: source.read_blob(d.digest) for d in blobs
    }


@pytest.mark.registry
def test_push_again_sends_nothing_and_keeps_one_fallback_entry_each(
    registry: Registry, repo: Path, home: Path, tmp_path: Path
) -> None:
    built, _ = build_with_note(repo, home)
    store = Store.for_home(home)
    push(store, built.digest, f"{registry.host}/again/app:1")
    again = push(store, built.digest, f"{registry.host}/again/app:1")
    assert again.blobs_uploaded == 0 and again.blobs_present == image_and_referrer_blobs(built)
    fallback = http_json(
        f"http://{registry.host}/v2/again/app/manifests/{referrers_tag(built.digest)}"
    )
    assert len(fallback["manifests"]) == 3

    # By digest, into a store that already has the image: nothing fetched twice.
    pulled = pull(store, f"{registry.host}/again/app@{built.digest}")
    assert pulled.digest == built.digest and pulled.blobs_fetched == 0


@pytest.mark.registry
def test_fallback_index_is_merged_with_what_is_there(
    registry: Registry, repo: Path, home: Path
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    push(store, "app:1", f"{registry.host}/merge/app:1")
    ledger = open_ledger(home)
    try:
        note = attach_and_record(
            store, ledger, "user:test", built.digest, NOTE_TYPE, b'{"n":2}', "application/json"
        )
    finally:
        ledger.close()
    result = push(store, "app:1", f"{registry.host}/merge/app")
    assert result.tag is None and result.blobs_uploaded == 1  # only the note's payload
    fallback = http_json(
        f"http://{registry.host}/v2/merge/app/manifests/{referrers_tag(built.digest)}"
    )
    assert len(fallback["manifests"]) == 3 and note.digest in {
        d["digest"] for d in fallback["manifests"]
    }


@pytest.mark.registry
def test_chunked_upload_of_a_large_layer(registry: Registry, tmp_path: Path, home: Path) -> None:
    # 3 MiB that gzip cannot shrink, so the layer blob is larger than several chunks.
    noise = b"".join(hashlib.sha256(i.to_bytes(4, "big")).digest() for i in range(3 * 32768))
    repo = make_repo(tmp_path / "big", {**APP_FILES, "app/noise.bin": noise})
    built = build(repo / "image.yaml", home, tag="big:1")
    assert max(layer.size for layer in built.layers) > 3 * 1024 * 1024
    store = Store.for_home(home)
    pushed = push(store, "big:1", f"{registry.host}/big/app:1", chunk_size=1024 * 1024)
    assert pushed.bytes_uploaded > 3 * 1024 * 1024
    other = Store.for_home(new_home(tmp_path, "other"), create=True)
    pulled = pull(other, f"{registry.host}/big/app@{built.digest}")
    assert pulled.bytes_fetched == pushed.bytes_uploaded
    other.verify(built.digest)


@pytest.mark.registry
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_skopeo_sees_our_digest_and_we_pull_what_skopeo_pushed(
    registry: Registry, repo: Path, home: Path, tmp_path: Path, compression: str
) -> None:
    skopeo = need_tool("skopeo")
    set_compression(repo, compression)
    built = build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    push(store, "app:1", f"{registry.host}/skopeo/ours:1")

    def run(*args: str) -> str:
        done = subprocess.run(
            [skopeo, *args], capture_output=True, text=True, timeout=120, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    info = json.loads(
        run("inspect", "--tls-verify=false", f"docker://{registry.host}/skopeo/ours:1")
    )
    assert info["Digest"] == built.digest
    assert info["Layers"] == [layer.digest for layer in built.layers]
    raw = run("inspect", "--raw", "--tls-verify=false", f"docker://{registry.host}/skopeo/ours:1")
    assert raw.encode() == store.read_blob(built.digest)

    run(
        "copy",
        "--preserve-digests",
        "--dest-tls-verify=false",
        f"oci:{home / 'store'}:app:1",
        f"docker://{registry.host}/skopeo/theirs:1",
    )
    other = Store.for_home(new_home(tmp_path, "other"), create=True)
    pulled = pull(other, f"{registry.host}/skopeo/theirs:1", tag="theirs:1")
    assert pulled.digest == built.digest
    assert pulled.referrers == () and pulled.referrers_method is None  # skopeo copies none
    other.verify(built.digest)


def _flip_last_hex_digit(path: Path, after: bytes) -> None:
    """Change one character after ``after`` without changing the length (JSON stays valid)."""
    data = path.read_bytes()
    at = data.index(after) + len(after)
    swapped = b"1" if data[at : at + 1] != b"1" else b"2"
    path.chmod(0o644)
    path.write_bytes(data[:at] + swapped + data[at + 1 :])


@pytest.mark.parametrize("by", ["digest", "tag"])
@pytest.mark.registry
def test_tampered_manifest_in_the_registry_is_refused(
    own_registry: Registry, repo: Path, home: Path, tmp_path: Path, by: str
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    push(Store.for_home(home), "app:1", f"{own_registry.host}/tamper-{by}/app:1")
    _flip_last_hex_digit(
        own_registry.blob_data(built.digest), b'"org.opencontainers.image.created":"'
    )

    other = new_home(tmp_path, "other")
    target = Store.for_home(other, create=True)
    before = snapshot(target.root)
    ref = f"@{built.digest}" if by == "digest" else ":1"
    with pytest.raises(RegistryContentError, match="does not match its digest"):
        pull(target, f"{own_registry.host}/tamper-{by}/app{ref}", tag="app:1")
    assert snapshot(target.root) == before
    assert not any(target.tmp_dir.iterdir())
    assert events(other, EVENT_PULLED) == []


@pytest.mark.registry
def test_tampered_layer_in_the_registry_is_refused(
    own_registry: Registry, repo: Path, home: Path, tmp_path: Path
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    push(Store.for_home(home), "app:1", f"{own_registry.host}/tamper-layer/app:1")
    data = own_registry.blob_data(built.layers[-1].digest)
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))

    other = new_home(tmp_path, "other")
    target = Store.for_home(other, create=True)
    before = snapshot(target.root)
    runner_result = cli_run(other, "artifact", "pull", f"{own_registry.host}/tamper-layer/app:1")
    assert runner_result.exit_code == 1, runner_result.stderr
    assert built.layers[-1].digest in runner_result.stderr
    assert snapshot(target.root) == before
    assert events(other, EVENT_PULLED) == []


@pytest.mark.registry
def test_pull_of_an_unknown_tag_or_repository(registry: Registry, home: Path) -> None:
    store = Store.for_home(home, create=True)
    with pytest.raises(NotFoundError, match="no manifest"):
        pull(store, f"{registry.host}/nothing/here:1")


@pytest.mark.registry
def test_local_tag_conflict_is_refused_before_any_download(
    registry: Registry, repo: Path, home: Path
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    push(store, "app:1", f"{registry.host}/conflict/app:1")
    with pytest.raises(TagConflictError):
        pull(store, f"{registry.host}/conflict/app@{'sha256:' + '0' * 64}", tag="app:1")
    pull(store, f"{registry.host}/conflict/app:1", tag="app:1")  # the same image: fine
    assert store.resolve("app:1").digest == built.digest


# -- the command line ----------------------------------------------------------------------------

cli = typer.Typer()
cli.add_typer(artifacts_cli.app, name="artifact")
runner = CliRunner()


def cli_run(home: Path, *args: str) -> Any:
    return runner.invoke(cli, [*args, "--home", str(home), "--format", "json"])


@pytest.mark.registry
def test_cli_push_and_pull(registry: Registry, repo: Path, home: Path, tmp_path: Path) -> None:
    built, _ = build_with_note(repo, home)
    done = cli_run(home, "artifact", "push", "app:1", f"{registry.host}/cli/app:7")
    assert done.exit_code == 0, done.stderr
    pushed = json.loads(done.stdout)
    assert pushed["schema_version"] == 1 and pushed["digest"] == built.digest
    assert len(pushed["referrers"]) == 3 and pushed["referrers_method"] == "tag-schema"
    assert isinstance(pushed["ledger_index"], int)
    assert events(home, EVENT_PUSHED)[0]["payload"]["reference"] == pushed["reference"]

    other = new_home(tmp_path, "other")
    source = f"{registry.host}/cli/app@{built.digest}"
    done = cli_run(other, "artifact", "pull", source, "--tag", "mine:1")
    assert done.exit_code == 0, done.stderr
    pulled = json.loads(done.stdout)
    assert pulled["digest"] == built.digest and pulled["tag"] == "mine:1"
    assert len(pulled["referrers"]) == 3
    shown = json.loads(cli_run(other, "artifact", "show", "mine:1", "--verify").stdout)
    assert len(shown["referrers"]) == 3

    text = runner.invoke(
        cli, ["artifact", "push", "app:1", f"{registry.host}/cli/app:7", "--home", str(home)]
    )
    assert text.exit_code == 0 and "referrers 3 via tag-schema" in text.stdout


@pytest.mark.parametrize(
    "args",
    [
        ("push", "app:1", "no-host-here/app:1"),
        ("push", "app:1", "127.0.0.1:5000/UPPER/app"),
        ("push", "nope:1", "127.0.0.1:5000/app:1"),
        ("pull", "127.0.0.1:5000/app"),
        ("pull", "127.0.0.1:5000/app@sha256:abc"),
        ("pull", "127.0.0.1:5000/app:1", "--tag", "bad tag"),
    ],
)
def test_cli_bad_input_exits_2(home: Path, args: tuple[str, ...]) -> None:
    Store.for_home(home, create=True)
    done = cli_run(home, "artifact", *args)
    assert done.exit_code == 2, (done.stdout, done.stderr)


def test_cli_unreachable_registry_exits_3(home: Path) -> None:
    Store.for_home(home, create=True)
    done = cli_run(home, "artifact", "pull", f"127.0.0.1:{free_port()}/app:1")
    assert done.exit_code == 3 and "cannot reach" in done.stderr


# -- what only the fake registry can show --------------------------------------------------------


def test_referrers_api_is_used_when_the_registry_has_it(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    built, note = build_with_note(repo, home)
    store = Store.for_home(home)
    with running_fake(FakeRegistry(referrers_api=True)) as fake:
        pushed = push(store, "app:1", f"{fake.host}/api/app:1")
        assert pushed.referrers_method == "referrers-api"
        assert not any(tag.startswith("sha256-") for _, tag in fake.tags)
        other = Store.for_home(new_home(tmp_path, "other"), create=True)
        pulled = pull(other, f"{fake.host}/api/app:1")
    assert pulled.referrers_method == "referrers-api"
    assert set(pulled.referrers) == referrer_digests(store, built.digest)
    assert note in pulled.referrers


def test_bearer_token_flow(repo: Path, home: Path, tmp_path: Path) -> None:
    build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    fake = FakeRegistry(token="t0ken")
    with running_fake(fake):
        with pytest.raises(RegistryAuthError, match="IMMUTRAIL_REGISTRY_USERNAME"):
            push(store, "app:1", f"{fake.host}/auth/app:1")
        with pytest.raises(RegistryAuthError, match="refused a token"):
            push(store, "app:1", f"{fake.host}/auth/app:1", credentials=Credentials("a", "b"))
        good = Credentials(fake.user, fake.password)
        pushed = push(store, "app:1", f"{fake.host}/auth/app:1", credentials=good)
        other = Store.for_home(new_home(tmp_path, "other"), create=True)
        pulled = pull(other, f"{fake.host}/auth/app:1", credentials=good)
    assert pulled.digest == pushed.digest
    assert "repository:auth/app:pull,push" in fake.token_requests[-2]
    assert all(scope for scope in fake.token_requests)


def test_a_lying_registry_leaves_the_store_untouched(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    built, _ = build_with_note(repo, home)
    store = Store.for_home(home)
    fake = FakeRegistry(referrers_api=True)
    with running_fake(fake):
        push(store, "app:1", f"{fake.host}/lie/app:1")
        other = Store.for_home(new_home(tmp_path, "other"), create=True)
        before = snapshot(other.root)
        # A referrer whose blob is served with other bytes: the image is fine, but not all of it.
        sbom = built.sbom
        sbom_blob = store.get_manifest(sbom)["layers"][0]["digest"]
        fake.tamper = lambda digest, data: data + b" " if digest == sbom_blob else data
        with pytest.raises(RegistryContentError, match=sbom_blob):
            pull(other, f"{fake.host}/lie/app:1")
        assert snapshot(other.root) == before
        # A longer blob is cut off as soon as it is longer than its descriptor says.
        fake.tamper = lambda digest, data: data * 2 if digest == built.layers[0].digest else data
        with pytest.raises(RegistryContentError, match="longer than its size"):
            pull(other, f"{fake.host}/lie/app:1")
        assert snapshot(other.root) == before
        # Without referrers the image itself pulls (tamper gone).
        fake.tamper = None
        assert pull(other, f"{fake.host}/lie/app:1", include_referrers=False).referrers == ()


# -- references and challenges -------------------------------------------------------------------


def test_reference_parsing() -> None:
    ref = Reference.parse("registry.example.org:5000/team/app:1.4@sha256:" + "a" * 64)
    assert (ref.host, ref.repository, ref.tag) == ("registry.example.org:5000", "team/app", "1.4")
    assert ref.digest == "sha256:" + "a" * 64 and not ref.is_loopback
    assert Reference.parse("localhost:5000/app").is_loopback
    assert Reference.parse("[::1]:5000/app").is_loopback
    assert str(Reference.parse("127.0.0.1:5000/a/b:c")) == "127.0.0.1:5000/a/b:c"
    for bad in ["app:1", "/app", "host.org/", "host.org/App", "host.org/app:", "host.org/a@sha1:x"]:
        with pytest.raises(ArtifactInputError):
            Reference.parse(bad)


def test_plain_http_only_for_loopback(home: Path) -> None:
    store = Store.for_home(home, create=True)
    with pytest.raises(ArtifactInputError, match="only allowed to a loopback"):
        pull(store, "registry.example.org/app:1", plain_http=True)


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push"'
    )
    assert scheme == "bearer"
    assert params == {
        "realm": "https://auth.example/token",
        "service": "reg",
        "scope": "repository:a/b:pull,push",
    }
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})
    with pytest.raises(RegistryAuthError):
        parse_challenge('Bearer realm="unterminated')


def test_unreachable_registry(home: Path) -> None:
    store = Store.for_home(home, create=True)
    with pytest.raises(RegistryUnreachableError):
        pull(store, f"127.0.0.1:{free_port()}/app:1")


def test_credentials_from_env() -> None:
    assert Credentials.from_env({}) is None
    assert Credentials.from_env(
        {"IMMUTRAIL_REGISTRY_USERNAME": "u", "IMMUTRAIL_REGISTRY_PASSWORD": "p"}
    ) == Credentials("u", "p")
    with pytest.raises(ArtifactInputError):
        Credentials.from_env({"IMMUTRAIL_REGISTRY_USERNAME": "u"})
    assert "p" not in repr(Credentials("u", "p")).replace("username='u'", "")


@pytest.mark.registry
def test_a_damaged_local_blob_is_never_pushed(
    own_registry: Registry, repo: Path, home: Path
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    layer = built.layers[-1]
    path = store.blob_path(layer.digest)
    content = bytearray(path.read_bytes())
    content[-1] ^= 0x01
    path.chmod(0o644)
    path.write_bytes(bytes(content))
    for chunk_size in (1 << 20, 16):  # one PUT, and PATCH chunks
        with pytest.raises(BlobVerificationError, match=layer.digest):
            push(store, "app:1", f"{own_registry.host}/damaged/app:1", chunk_size=chunk_size)
        url = f"http://{own_registry.host}/v2/damaged/app/blobs/{layer.digest}"
        request = urllib.request.Request(url, method="HEAD")
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(request, timeout=10)
        with pytest.raises(urllib.error.HTTPError, match="404"):
            http_json(f"http://{own_registry.host}/v2/damaged/app/manifests/1")


def test_an_index_is_pulled_and_pushed_with_its_images(
    repo: Path, home: Path, tmp_path: Path
) -> None:
    built = build(repo / "image.yaml", home, tag="app:1")
    store = Store.for_home(home)
    with running_fake(FakeRegistry(referrers_api=False)) as fake:
        push(store, "app:1", f"{fake.host}/multi/app:1", include_referrers=False)
        child = store.resolve("app:1").descriptor
        entry = {**child.to_dict(), "platform": {"os": "linux", "architecture": "amd64"}}
        index = oci.encode({"schemaVersion": 2, "mediaType": oci.INDEX, "manifests": [entry]})
        index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
        fake.manifests[index_digest] = (index, oci.INDEX)
        fake.tags[("multi/app", "all")] = index_digest

        other = Store.for_home(new_home(tmp_path, "other"), create=True)
        pulled = pull(other, f"{fake.host}/multi/app:all", tag="all:1")
        assert (pulled.digest, pulled.media_type) == (index_digest, oci.INDEX)
        assert other.read_blob(index_digest) == index
        _, blobs = other.image_blobs(built.digest)  # the image the index lists came with it
        for blob in blobs:
            other.verify_blob(blob.digest, blob.size)

        again = push(other, "all:1", f"{fake.host}/copy/app:all")
        assert again.blobs_present == 1 + len(built.layers)
        assert fake.tags[("copy/app", "all")] == index_digest
        assert built.digest in fake.manifests


def test_a_pull_that_fails_before_the_index_is_written_lists_nothing(
    repo: Path, home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The image and its referrers reach index.json in one write, after the ledger event: when
    recording fails, none of them is listed (no image without its attestations, or the reverse)."""
    built, note = build_with_note(repo, home)
    store = Store.for_home(home)
    with running_fake(FakeRegistry(referrers_api=True)) as fake:
        push(store, "app:1", f"{fake.host}/atomic/app:1")
        other_home = new_home(tmp_path, "other")
        other = Store.for_home(other_home, create=True)
        index_before = (other.root / "index.json").read_bytes()
        ledger = open_ledger(other_home)
        try:

            def refuse(event: object) -> None:
                raise OSError("the ledger's disk is full")

            with monkeypatch.context() as patch, pytest.raises(OSError, match="disk is full"):
                patch.setattr(ledger, "append", refuse)
                pull(other, f"{fake.host}/atomic/app:1", ledger=ledger, actor="user:test")
            assert (other.root / "index.json").read_bytes() == index_before
            assert ledger.head().size == 0

            pulled = pull(other, f"{fake.host}/atomic/app:1", ledger=ledger, actor="user:test")
        finally:
            ledger.close()
    assert pulled.digest == built.digest
    assert referrer_digests(other, built.digest) == {built.sbom, built.provenance, note}
