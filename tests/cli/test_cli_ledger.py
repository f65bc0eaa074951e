"""The CLI contract other parts and users rely on: options, JSON shapes, exit codes, bad input."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from immutrail.cli.main import app
from immutrail.ledger import merkle

runner = CliRunner()


def run(home: Path, *args: str, code: int = 0, stdin: str | None = None) -> str:
    result = runner.invoke(app, [*args, "--home", str(home)], input=stdin)
    assert result.exit_code == code, (result.stdout, result.stderr)
    return result.stdout


def flat(text: str) -> str:
    """Rich wraps long messages at the terminal width: compare the words."""
    return " ".join(text.split())


def run_json(home: Path, *args: str, code: int = 0) -> dict:
    data: dict = json.loads(run(home, *args, "--format", "json", code=code))
    assert data["schema_version"] == 1
    return data


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "home"
    out = run_json(h, "init")
    assert out["created"] is True and out["vkey"].startswith(out["origin"] + "+")
    return h


def append(home: Path, **fields: str) -> dict:
    args = ["ledger", "append"]
    for key, value in {
        "type": "artifact.built",
        "actor": "builder:ci",
        "subject": "sha256:" + "c" * 64,
        **fields,
    }.items():
        args += [f"--{key}", value]
    return run_json(home, *args)


def test_append_prints_index_id_and_leaf_hash(home: Path) -> None:
    first = append(home, payload='{"commit":"4f2a9c"}')
    second = append(home)
    assert (first["index"], second["index"]) == (0, 1)
    raw = run_json(home, "ledger", "entry", "0", "--raw")
    data = base64.b64decode(raw["entry"])
    assert base64.b64decode(first["leaf_hash"]) == merkle.leaf_hash(data)
    shown = run_json(home, "ledger", "entry", first["id"])
    assert shown["event"]["payload"] == {"commit": "4f2a9c"}
    assert shown["event"]["id"] == first["id"]


def test_payload_from_file_and_batch_from_jsonl(home: Path, tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text('{"sbom": "sha256:' + "d" * 64 + '"}')
    append(home, payload=f"@{payload}")
    batch = tmp_path / "b.jsonl"
    batch.write_text(
        "\n".join(
            json.dumps(
                {
                    "type": "scan.completed",
                    "actor": "scanner:osv",
                    "subject": f"img:{i}",
                    "payload": {"critical": i},
                }
            )
            for i in range(5)
        )
        + "\n\n"
    )
    out = run_json(home, "ledger", "append", "--batch", str(batch))
    assert [a["index"] for a in out["appended"]] == [1, 2, 3, 4, 5]
    listed = run(home, "ledger", "list", "--type", "scan.completed", "--format", "json")
    lines = [json.loads(line) for line in listed.splitlines()]
    assert [x["index"] for x in lines] == [1, 2, 3, 4, 5]
    assert lines[2]["event"]["payload"] == {"critical": 2}


def test_batch_from_stdin(home: Path) -> None:
    line = json.dumps({"type": "a.b", "actor": "x", "subject": "y", "payload": {}})
    result = runner.invoke(
        app,
        ["ledger", "append", "--batch", "-", "--home", str(home), "--format", "json"],
        input=line + "\n" + line.replace('"y"', '"z"') + "\n",
    )
    assert result.exit_code == 0, result.stderr
    assert len(json.loads(result.stdout)["appended"]) == 2


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--payload", "{not json"], "not valid JSON"),
        (["--payload", "[1,2]"], "must be a JSON object"),
        (["--payload", '{"a":1,"a":2}'], "duplicate key"),
        (["--payload", '{"a":NaN}'], "NaN"),
        (["--time", "yesterday"], "RFC 3339"),
        (["--time", "2026-02-30T00:00:00Z"], "not a valid time"),
        (["--type", "NoDots"], "dotted"),
        (["--actor", "has space"], "principal"),
        (["--payload", "@/nonexistent/file.json"], "cannot read"),
        (["--payload", json.dumps({"x": "a" * 70000})], "limit"),
    ],
)
def test_bad_single_appends_exit_2_and_write_nothing(
    home: Path, args: list[str], fragment: str
) -> None:
    base = {"--type": "artifact.built", "--actor": "builder:ci", "--subject": "img:a"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for pair in base.items() for x in pair]
    result = runner.invoke(app, ["ledger", "append", *flat, "--home", str(home)])
    assert result.exit_code == 2, result.stdout
    assert fragment in result.stderr
    assert run_json(home, "ledger", "verify")["size"] == 0


@pytest.mark.parametrize(
    ("lines", "fragment"),
    [
        (['{"type":"a.b","actor":"x","subject":"y","payload":{}}', "{oops"], "line 2"),
        (['{"type":"a.b","actor":"x","subject":"y","payload":{},"extra":1}'], "unknown fields"),
        (['{"type":"a.b","actor":"x","payload":{}}'], "missing fields"),
        (['{"type":"a.b","actor":"x","subject":"y","payload":{},"id":"not-a-uuid"}'], "UUID"),
        ([], "no events"),
    ],
)
def test_bad_batches_exit_2_and_write_nothing(
    home: Path, tmp_path: Path, lines: list[str], fragment: str
) -> None:
    batch = tmp_path / "bad.jsonl"
    batch.write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["ledger", "append", "--batch", str(batch), "--home", str(home)])
    assert result.exit_code == 2
    assert fragment in result.stderr
    assert run_json(home, "ledger", "verify")["size"] == 0


def test_index_out_of_range_and_unknown_id_exit_2(home: Path) -> None:
    append(home)
    for args in (
        ["ledger", "entry", "1"],
        ["ledger", "prove", "inclusion", "5"],
        ["ledger", "prove", "consistency", "1", "9"],
        ["ledger", "entry", "01900000-0000-7000-8000-000000000000"],
    ):
        result = runner.invoke(app, [*args, "--home", str(home)])
        assert result.exit_code == 2, args
        assert "error:" in result.stderr


def test_commands_on_an_uninitialized_home_exit_3(tmp_path: Path) -> None:
    result = runner.invoke(app, ["ledger", "vkey", "--home", str(tmp_path / "none")])
    assert result.exit_code == 3
    assert "immutrail init" in result.stderr


def test_prove_outputs_match_the_documented_shapes(home: Path) -> None:
    for _ in range(6):
        append(home)
    inc = run_json(home, "ledger", "prove", "inclusion", "2", "--size", "5")
    assert set(inc) == {"schema_version", "index", "size", "leaf_hash", "root", "proof"}
    merkle.verify_inclusion(
        2,
        5,
        base64.b64decode(inc["leaf_hash"]),
        [base64.b64decode(h) for h in inc["proof"]],
        base64.b64decode(inc["root"]),
    )
    con = run_json(home, "ledger", "prove", "consistency", "3", "6")
    assert set(con) == {"schema_version", "old_size", "new_size", "old_root", "new_root", "proof"}
    merkle.verify_consistency(
        3,
        6,
        base64.b64decode(con["old_root"]),
        base64.b64decode(con["new_root"]),
        [base64.b64decode(h) for h in con["proof"]],
    )
    latest = run_json(home, "ledger", "prove", "inclusion", "2")
    assert latest["size"] == 6 and con["new_root"] == latest["root"]


def test_checkpoint_publish_vkey_tlog_proof_and_verify(home: Path, tmp_path: Path) -> None:
    for _ in range(3):
        append(home)
    witness = tmp_path / "witness"
    note = run(home, "ledger", "checkpoint", "--publish", str(witness))
    vkey = run(home, "ledger", "vkey").strip()
    assert note.split("\n")[1] == "3"
    assert (witness / "vkey").read_text().strip() == vkey
    assert (witness / "checkpoint-00000000000000000003").read_text() == note
    proof = run(home, "ledger", "prove", "inclusion", "1", "--format", "tlog-proof")
    assert proof.startswith("c2sp.org/tlog-proof@v1\nindex 1\n") and proof.endswith(note)
    ok = run_json(home, "ledger", "verify", "--witness", str(witness))
    assert ok["ok"] is True and ok["witnessed"] == 1 and ok["problems"] == []
    text = run(home, "ledger", "verify", "--witness", str(witness))
    assert text.startswith("ok:")
    parallel = run_json(home, "ledger", "verify", "--workers", "2")
    assert parallel["ok"] is True and parallel["entries"] == ok["entries"]
    run(home, "ledger", "verify", "--workers", "0", code=2)


def test_console_script_runs_and_documents_exit_codes(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "immutrail"
    result = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert result.returncode == 0
    assert "Exit codes" in result.stdout
    bad = subprocess.run(
        [str(exe), "ledger", "append", "--bogus"], capture_output=True, text=True, check=False
    )
    assert bad.returncode == 2


@pytest.mark.parametrize("option", ["--payload", "--batch"])
def test_endless_or_folder_input_files_exit_2_without_reading_them_whole(
    home: Path, tmp_path: Path, option: str
) -> None:
    """/dev/zero reports 0 bytes and never ends: the limit holds on the read, not on stat."""
    for source, fragment in (("/dev/zero", "limit"), (str(tmp_path), "directory")):
        value = f"@{source}" if option == "--payload" else source
        args = ["ledger", "append", option, value, "--home", str(home)]
        if option == "--payload":
            args += ["--type", "a.b", "--actor", "builder:ci", "--subject", "s"]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.stderr
        assert fragment in flat(result.stderr).lower()
    assert run_json(home, "ledger", "verify")["size"] == 0


def _damaged_witness(root: Path, damage: str, vkey: str) -> tuple[Path, str]:
    """A witness folder with one flaw, and the words the error must use."""
    folder = root / damage
    folder.mkdir()
    (folder / "vkey").write_text(vkey + "\n")
    if damage == "vkey-folder":
        (folder / "vkey").unlink()
        (folder / "vkey").mkdir()
        return folder, "not a regular file"
    if damage == "vkey-binary":
        (folder / "vkey").write_bytes(b"\xff\xfe\x00")
        return folder, "not UTF-8"
    if damage == "vkey-huge":
        (folder / "vkey").write_text("x" * 100_000)
        return folder, "larger than"
    if damage == "checkpoint-folder":
        (folder / "checkpoint-00000000000000000001").mkdir()
        return folder, "not a regular file"
    if damage == "checkpoint-device":
        (folder / "checkpoint-00000000000000000001").symlink_to("/dev/zero")
        return folder, "not a regular file"
    raise AssertionError(damage)


@pytest.mark.parametrize(
    "damage",
    ["vkey-folder", "vkey-binary", "vkey-huge", "checkpoint-folder", "checkpoint-device"],
)
def test_a_damaged_witness_folder_is_bad_input_for_verify_and_publish(
    home: Path, tmp_path: Path, damage: str
) -> None:
    """Exit 2 naming the file, never a traceback or exit 1; publishing changes nothing."""
    append(home)
    vkey = run(home, "ledger", "vkey").strip()
    folder, fragment = _damaged_witness(tmp_path, damage, vkey)
    result = runner.invoke(app, ["ledger", "verify", "--witness", str(folder), "--home", str(home)])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert fragment in flat(result.stderr)
    if damage.startswith("vkey"):
        published = runner.invoke(
            app, ["ledger", "checkpoint", "--publish", str(folder), "--home", str(home)]
        )
        assert published.exit_code == 2, (published.stderr, published.exception)
        assert fragment in flat(published.stderr)
        assert run_json(home, "ledger", "verify")["checkpoints"] == 0


def test_publishing_onto_a_file_is_bad_input_and_signs_nothing(home: Path, tmp_path: Path) -> None:
    append(home)
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("keep me")
    result = runner.invoke(
        app, ["ledger", "checkpoint", "--publish", str(not_a_folder), "--home", str(home)]
    )
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "is not a folder" in flat(result.stderr)
    assert not_a_folder.read_text() == "keep me"
    assert run_json(home, "ledger", "verify")["checkpoints"] == 0


@pytest.mark.parametrize(
    ("failure", "code", "fragment"),
    [
        ("RuntimeError('boom')", 4, "internal error"),
        ("OSError(28, 'No space left on device')", 3, "No space left on device"),
    ],
)
def test_an_unanticipated_error_never_exits_1(
    home: Path, failure: str, code: int, fragment: str
) -> None:
    """Python's own exit code for a crash is 1, which a script reads as "verification failed"."""
    script = (
        "import sys\n"
        "from unittest import mock\n"
        "from immutrail.cli.main import main\n"
        f"with mock.patch('immutrail.ledger.ledger.Ledger.head', side_effect={failure}):\n"
        f"    sys.argv = ['immutrail', 'ledger', 'list', '--home', {str(home)!r}]\n"
        "    main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=False
    )
    assert result.returncode == code, result.stderr
    assert fragment in result.stderr
    assert ("Traceback" in result.stderr) is (code == 4)


def test_a_bad_init_creates_nothing_and_a_second_init_keeps_the_database(tmp_path: Path) -> None:
    for args in (["--origin", "x y"], ["--origin", "a+b"], ["--admin", "Not A Name"]):
        fresh = tmp_path / "fresh"
        result = runner.invoke(app, ["init", *args, "--home", str(fresh)])
        assert result.exit_code == 2, (args, result.stderr, result.exception)
        assert not fresh.exists(), args
    home = tmp_path / "home"
    run(home, "init")
    append(home)
    for db in (f"sqlite:///{tmp_path / 'other.db'}", "sqlite://"):
        result = runner.invoke(app, ["init", "--db", db, "--home", str(home)])
        assert result.exit_code == 2, (db, result.stderr, result.exception)
        assert not (home / "config.json").exists()
    assert run_json(home, "ledger", "verify")["size"] == 1  # still the same ledger


def test_times_outside_years_1_to_9999_in_utc_are_bad_input(home: Path) -> None:
    for moment in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        result = runner.invoke(
            app,
            [
                *["ledger", "append", "--type", "a.b", "--actor", "builder:ci", "--subject", "s"],
                *["--time", moment, "--home", str(home)],
            ],
        )
        assert result.exit_code == 2, (result.stderr, result.exception)
        assert "years 1 to 9999" in flat(result.stderr)
        listed = runner.invoke(app, ["ledger", "list", "--since", moment, "--home", str(home)])
        assert listed.exit_code == 2, (listed.stderr, listed.exception)
    too_far = runner.invoke(app, ["ledger", "list", "--start", str(2**63), "--home", str(home)])
    assert too_far.exit_code == 2, too_far.exception
    assert run_json(home, "ledger", "verify")["size"] == 0


def test_a_folder_as_the_database_is_an_operational_error(tmp_path: Path) -> None:
    result = runner.invoke(
        app, ["init", "--db", f"sqlite:///{tmp_path}", "--home", str(tmp_path / "h")]
    )
    assert result.exit_code == 3, (result.stderr, result.exception)
    assert not (tmp_path / "h" / "config.json").exists()


def test_a_witness_slot_that_contradicts_the_checkpoint_stores_nothing(
    home: Path, tmp_path: Path
) -> None:
    append(home)
    witness = tmp_path / "w"
    witness.mkdir()
    (witness / "vkey").write_text(run(home, "ledger", "vkey"))
    (witness / "checkpoint-00000000000000000001").write_text("not this ledger's\n")
    result = runner.invoke(
        app, ["ledger", "checkpoint", "--publish", str(witness), "--home", str(home)]
    )
    assert result.exit_code == 1, (result.stderr, result.exception)
    assert "forked" in flat(result.stderr)
    assert run_json(home, "ledger", "verify")["checkpoints"] == 0


def test_a_ledger_key_passphrase_need_not_be_utf8(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "immutrail"
    env = {**{k.encode(): v.encode() for k, v in os.environ.items()}}
    env[b"IMMUTRAIL_LEDGER_KEY_PASSPHRASE"] = b"\xff\xfepass"
    home = str(tmp_path / "home")
    for args in (["init"], ["ledger", "checkpoint"]):
        result = subprocess.run(
            [str(exe), *args, "--home", home], env=env, capture_output=True, check=False
        )
        assert result.returncode == 0, result.stderr.decode(errors="replace")
    assert b"ENCRYPTED" in (tmp_path / "home" / "ledger.key").read_bytes()


def test_user_text_in_an_error_is_printed_not_parsed_as_markup(home: Path) -> None:
    """Rich markup in a quoted value ("[/x]") used to raise MarkupError: exit 4, no message."""
    result = runner.invoke(app, ["ledger", "entry", "[/x]", "--home", str(home)])
    assert result.exit_code == 2, (result.stderr, result.exception)
    assert "'[/x]'" in flat(result.stderr)
