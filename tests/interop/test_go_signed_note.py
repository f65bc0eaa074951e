"""Interop: Go's reference signed-note implementation verifies immutrail's checkpoints unchanged.

The requirement: "A standard signed-note implementation (for example Go's
golang.org/x/mod/sumdb/note) must verify our notes unchanged." These tests build
``tests/interop/noteverify`` (a few lines around ``note.NewVerifier`` and ``note.Open``
from the Debian package golang-golang-x-mod-dev, x/mod 0.7.0, used as shipped) and feed it
the exact bytes our CLI prints: ``immutrail ledger checkpoint`` and ``immutrail ledger vkey``.

Needs the Debian packages ``golang-go`` and ``golang-golang-x-mod-dev``. Without them the
tests skip, except under ``CI=true`` where they fail: CI must not pass by skipping.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BUILD_SCRIPT = HERE / "build-noteverify.sh"
DATA = HERE / "data"
GOCODE = Path(os.environ.get("GOCODE", "/usr/share/gocode"))
GO_EXAMPLE_TEST = GOCODE / "src/golang.org/x/mod/sumdb/note/example_test.go"
TIMEOUT = 120
EM_DASH = "\u2014"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _missing(reason: str) -> None:
    if _in_ci():
        pytest.fail(f"{reason} and CI=true: a required tool is missing", pytrace=False)
    pytest.skip(reason)


# --- the Go side ------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoResult:
    code: int
    stdout: bytes
    stderr: str

    @property
    def json(self) -> dict:
        data: dict = json.loads(self.stdout)
        return data


@dataclass(frozen=True)
class NoteVerify:
    """The built Go program: ``noteverify [-checkpoint] VKEY`` with the note on stdin."""

    binary: Path

    def __call__(self, vkey: str, note: bytes, *, checkpoint: bool = False) -> GoResult:
        args = [str(self.binary), *(["-checkpoint"] if checkpoint else []), vkey]
        proc = subprocess.run(args, input=note, capture_output=True, timeout=TIMEOUT, check=False)
        return GoResult(proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace"))


@pytest.fixture(scope="session")
def noteverify(tmp_path_factory: pytest.TempPathFactory) -> NoteVerify:
    if shutil.which("go") is None:
        _missing("`go` not found (apt-get install golang-go golang-golang-x-mod-dev)")
    if not (GOCODE / "src/golang.org/x/mod/sumdb/note/note.go").is_file():
        _missing(f"x/mod source not under {GOCODE} (apt-get install golang-golang-x-mod-dev)")
    out = tmp_path_factory.mktemp("go") / "noteverify"
    proc = subprocess.run(
        ["bash", str(BUILD_SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, f"building noteverify failed:\n{proc.stdout}\n{proc.stderr}"
    return NoteVerify(out)


# --- our side: the real CLI, as a user runs it --------------------------------------------------


def immutrail(
    home: Path, *args: str, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``immutrail ARGS --home HOME`` in a subprocess; stdout is kept as raw bytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUTRAIL_")}
    proc = subprocess.run(
        [sys.executable, "-m", "immutrail.cli.main", *args, "--home", str(home)],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
    return proc


def immutrail_json(home: Path, *args: str) -> dict:
    data: dict = json.loads(immutrail(home, *args, "--format", "json").stdout)
    return data


@dataclass(frozen=True)
class Ledger:
    home: Path
    origin: str
    vkey: str  # as `immutrail ledger vkey` prints it, without the line end
    note: bytes  # as `immutrail ledger checkpoint` prints it, byte for byte
    checkpoint: dict  # `immutrail ledger checkpoint --format json`

    @property
    def body(self) -> bytes:
        return self.note[: self.note.rindex(b"\n\n") + 1]

    @property
    def signature_line(self) -> bytes:
        return self.note[self.note.rindex(b"\n\n") + 2 :]


def event(i: int) -> dict[str, str]:
    """Event fields as `ledger append` options take them (the payload as JSON text)."""
    return {
        "type": "artifact.built",
        "actor": "user:alice",
        "subject": "sha256:" + f"{i % 256:02x}" * 32,
        "payload": json.dumps({"build": i}),
    }


def batch_line(i: int) -> str:
    """The same event as one line of a `ledger append --batch` JSONL file."""
    fields: dict[str, object] = {**event(i)}
    fields["payload"] = {"build": i}
    return json.dumps(fields)


def make_ledger(
    home: Path, events: int, *, origin: str | None = None, batch: bool = False
) -> Ledger:
    """Init (idempotent), append events one command each (or in one --batch), checkpoint."""
    init = immutrail_json(home, "init", *(["--origin", origin] if origin else []))
    if batch:
        jsonl = "".join(batch_line(i) + "\n" for i in range(events))
        immutrail(home, "ledger", "append", "--batch", "-", stdin=jsonl.encode())
    else:
        for i in range(events):
            immutrail(home, "ledger", "append", *(f"--{k}={v}" for k, v in event(i).items()))
    checkpoint = immutrail_json(home, "ledger", "checkpoint")
    note = immutrail(home, "ledger", "checkpoint").stdout
    vkey_text = immutrail(home, "ledger", "vkey").stdout.decode("utf-8")
    vkey_json = immutrail_json(home, "ledger", "vkey")
    assert vkey_text.endswith("\n") and vkey_text.count("\n") == 1, vkey_text
    vkey = vkey_text.removesuffix("\n")
    assert vkey == vkey_json["vkey"] == init["vkey"]
    assert vkey_json["origin"] == init["origin"]
    return Ledger(home, init["origin"], vkey, note, checkpoint)


@pytest.fixture(scope="module")
def ledger(tmp_path_factory: pytest.TempPathFactory) -> Ledger:
    return make_ledger(tmp_path_factory.mktemp("ledger") / "home", 3)


def vkey_hash(vkey: str) -> str:
    return vkey.split("+")[1]


# --- the harness itself, against Go's own known answer ------------------------------------------


def test_known_answer_is_gos_doc_example() -> None:
    """tests/interop/data holds the ExampleOpen note and key of x/mod/sumdb/note, byte for byte."""
    if not GO_EXAMPLE_TEST.is_file():
        _missing(f"{GO_EXAMPLE_TEST} not found (apt-get install golang-golang-x-mod-dev)")
    example = GO_EXAMPLE_TEST.read_text(encoding="utf-8")
    vkey = (DATA / "peterneumann.vkey").read_text(encoding="utf-8").strip()
    note = (DATA / "peterneumann.note").read_text(encoding="utf-8")
    assert f'vkey := "{vkey}"' in example
    lines = note.splitlines(keepends=True)
    go_literal = " +\n\t\t".join(json.dumps(line, ensure_ascii=False) for line in lines)
    assert go_literal in example


def test_go_verifies_its_own_doc_example(noteverify: NoteVerify) -> None:
    vkey = (DATA / "peterneumann.vkey").read_text(encoding="utf-8").strip()
    note = (DATA / "peterneumann.note").read_bytes()
    result = noteverify(vkey, note)
    assert result.code == 0, result.stderr
    assert result.stdout == (
        b"If you think cryptography is the answer to your problem,\n"
        b"then you don't know what your problem is.\n"
    )
    assert "verified signature by PeterNeumann+c74f20a3" in result.stderr


def test_harness_rejects_what_it_should(noteverify: NoteVerify) -> None:
    vkey = (DATA / "peterneumann.vkey").read_text(encoding="utf-8").strip()
    note = (DATA / "peterneumann.note").read_bytes()
    tampered = noteverify(vkey, note.replace(b"cryptography", b"cryptographY"))
    assert tampered.code == 1
    assert tampered.stdout == b""
    assert "invalid signature for key PeterNeumann+c74f20a3" in tampered.stderr
    # The doc example verifies, but it is no checkpoint: the checkpoint parser must say so.
    not_checkpoint = noteverify(vkey, note, checkpoint=True)
    assert not_checkpoint.code == 1
    assert "checkpoint:" in not_checkpoint.stderr
    bad_key = noteverify(vkey.replace("+c74f20a3+", "+c74f20a4+"), note)
    assert bad_key.code == 1
    assert "invalid verifier hash" in bad_key.stderr


# --- Go verifies our notes ----------------------------------------------------------------------


def test_go_verifies_our_checkpoint_unchanged(noteverify: NoteVerify, ledger: Ledger) -> None:
    result = noteverify(ledger.vkey, ledger.note)
    assert result.code == 0, (ledger.note, ledger.vkey, result.stderr)
    assert result.stdout == ledger.body
    assert f"verified signature by {ledger.origin}+{vkey_hash(ledger.vkey)}" in result.stderr


def test_go_reads_the_same_origin_size_and_root(noteverify: NoteVerify, ledger: Ledger) -> None:
    result = noteverify(ledger.vkey, ledger.note, checkpoint=True)
    assert result.code == 0, (ledger.note, result.stderr)
    go = result.json
    assert go["origin"] == ledger.origin
    assert go["size"] == ledger.checkpoint["size"] == 3
    assert go["root"] == ledger.checkpoint["root"]
    assert len(base64.b64decode(go["root"], validate=True)) == 32
    # ADR 0003: the key name is the origin; no extension lines.
    assert go["signers"] == [{"name": ledger.origin, "hash": vkey_hash(ledger.vkey)}]
    assert go["extensions"] == []


def test_json_note_is_the_printed_note(noteverify: NoteVerify, ledger: Ledger) -> None:
    """The note inside ``checkpoint --format json`` is the same bytes, and verifies too."""
    assert ledger.checkpoint["note"].encode("utf-8") == ledger.note
    assert noteverify(ledger.vkey, ledger.checkpoint["note"].encode("utf-8")).code == 0


def test_go_verifies_empty_and_later_checkpoints(
    noteverify: NoteVerify, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """A chosen origin; the empty tree, then 16 events appended to the same ledger as a batch."""
    home = tmp_path_factory.mktemp("later") / "home"
    empty = make_ledger(home, 0, origin="ci.example.com/immutrail/interop")
    later = make_ledger(home, 16, batch=True)  # init is idempotent: same key and origin
    assert later.vkey == empty.vkey
    for led, size in ((empty, 0), (later, 16)):
        result = noteverify(led.vkey, led.note, checkpoint=True)
        assert result.code == 0, (led.note, result.stderr)
        assert result.json["origin"] == "ci.example.com/immutrail/interop"
        assert result.json["size"] == led.checkpoint["size"] == size
        assert result.json["root"] == led.checkpoint["root"]
    # RFC 6962: the root of the empty tree is SHA-256 of the empty string.
    assert empty.checkpoint["root"] == base64.b64encode(hashlib.sha256(b"").digest()).decode()
    assert later.checkpoint["root"] != empty.checkpoint["root"]


# --- Go rejects changed notes and other keys ----------------------------------------------------


def test_note_is_the_signed_note_shape(ledger: Ledger) -> None:
    """Spell out the expected bytes, so a failure in Go points at the exact difference."""
    body, sig_line = ledger.body, ledger.signature_line
    size, root = ledger.checkpoint["size"], ledger.checkpoint["root"]
    assert body == f"{ledger.origin}\n{size}\n{root}\n".encode()
    prefix = f"{EM_DASH} {ledger.origin} ".encode()
    assert sig_line.startswith(prefix) and sig_line.endswith(b"\n"), sig_line
    assert sig_line.count(b"\n") == 1
    sig = base64.b64decode(sig_line[len(prefix) : -1], validate=True)
    assert len(sig) == 4 + 64
    assert sig[:4].hex() == vkey_hash(ledger.vkey)


def _replace_byte(data: bytes, index: int) -> bytes:
    new = ord("A") if data[index] != ord("A") else ord("B")
    return data[:index] + bytes([new]) + data[index + 1 :]


def test_go_rejects_any_changed_body_byte(noteverify: NoteVerify, ledger: Ledger) -> None:
    body = ledger.body
    for i in range(len(body)):
        tampered = _replace_byte(body, i) + b"\n" + ledger.signature_line
        result = noteverify(ledger.vkey, tampered)
        assert result.code == 1, (i, tampered)
        assert result.stdout == b""
        if i == len(body) - 1:  # the body's last newline: no blank line before the signature
            assert "malformed note" in result.stderr
        else:
            assert "invalid signature for key" in result.stderr, (i, result.stderr)


def test_go_rejects_any_changed_signature_byte(noteverify: NoteVerify, ledger: Ledger) -> None:
    prefix = f"{EM_DASH} {ledger.origin} ".encode()
    sig = base64.b64decode(ledger.signature_line[len(prefix) : -1])
    for i in range(len(sig)):
        changed = sig[:i] + bytes([sig[i] ^ 0x01]) + sig[i + 1 :]
        tampered = ledger.body + b"\n" + prefix + base64.b64encode(changed) + b"\n"
        result = noteverify(ledger.vkey, tampered)
        assert result.code == 1, (i, tampered)
        assert result.stdout == b""
        if i < 4:  # the key hash: an unknown key, so no signature Go can check
            assert "note has no verifiable signatures" in result.stderr, (i, result.stderr)
        else:
            assert "invalid signature for key" in result.stderr, (i, result.stderr)


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("no final newline", lambda n: n[:-1]),
        ("CRLF line ends", lambda n: n.replace(b"\n", b"\r\n")),
        ("ASCII dash for the em dash", lambda n: n.replace(EM_DASH.encode(), b"-")),
        ("no blank line", lambda n: n.replace(b"\n\n", b"\n")),
    ],
)
def test_go_rejects_a_malformed_note(
    noteverify: NoteVerify, ledger: Ledger, name: str, change: Callable[[bytes], bytes]
) -> None:
    result = noteverify(ledger.vkey, change(ledger.note))
    assert result.code == 1, name
    assert "malformed note" in result.stderr, (name, result.stderr)


def test_go_rejects_our_note_with_another_ledgers_key(
    noteverify: NoteVerify, ledger: Ledger, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.mktemp("other")
    other = immutrail_json(base / "random-origin", "init")["vkey"]
    same_name = immutrail_json(base / "same-origin", "init", "--origin", ledger.origin)["vkey"]
    assert same_name.startswith(ledger.origin + "+") and same_name != ledger.vkey
    for vkey in (other, same_name):
        result = noteverify(vkey, ledger.note)
        assert result.code == 1, vkey
        assert result.stdout == b""
        assert "note has no verifiable signatures" in result.stderr, result.stderr
    # Our name and key hash, another key: Go refuses the verifier key itself.
    name, key_hash, _ = ledger.vkey.split("+", 2)
    other_key = same_name.split("+", 2)[2]
    forged = f"{name}+{key_hash}+{other_key}"
    result = noteverify(forged, ledger.note)
    assert result.code == 1
    assert "invalid verifier hash" in result.stderr, result.stderr
