"""The database: imports from files, folders and all.zip archives; atomicity; the snapshot."""

from __future__ import annotations

import json
import sqlite3
import zipfile
from pathlib import Path

import pytest

from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter
from immutrail.scan.errors import ArchiveError, OsvRecordError, ScanInputError, VulnDbMissingError
from immutrail.scan.sources import read_zip
from immutrail.scan.vulndb import VulnDb, db_path

from .conftest import EXTRA, OSV, import_into

RECORDS = sorted(OSV.rglob("*.json"))


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def all_zip(path: Path, extra: dict[str, bytes] | None = None) -> Path:
    members = {p.name: p.read_bytes() for p in RECORDS}
    return make_zip(path, {**members, **(extra or {})})


def snapshot(home: Path) -> str:
    with VulnDb.open(home) as db:
        return db.snapshot().digest


def vulndb_events(home: Path) -> list[dict]:  # type: ignore[type-arg]
    ledger = open_ledger(home)
    try:
        return [json.loads(r.data) for r in ledger.entries(EntryFilter(type="vulndb.imported"))]
    finally:
        ledger.close()


def test_folder_and_archive_give_the_same_snapshot(tmp_path: Path, home: Path) -> None:
    import_into(home, OSV)
    other = tmp_path / "other"
    from immutrail.ledger.home import init_ledger

    init_ledger(other)[0].close()
    import_into(other, all_zip(tmp_path / "all.zip"))
    assert snapshot(home) == snapshot(other)
    with VulnDb.open(home) as db:
        assert db.snapshot().records == len(RECORDS)
        assert db.compute_snapshot().digest == db.snapshot().digest
        assert {c.record_id for c in db.candidates("PyPI", "requests")} >= {"PYSEC-2018-28"}
        assert [c.ecosystem for c in db.candidates("Debian", "nginx")] == ["Debian:7"]
    event = vulndb_events(home)[0]
    assert event["subject"] == snapshot(home)
    assert event["payload"]["added"] == len(RECORDS)
    assert event["payload"]["sources"][0]["kind"] == "folder"


def test_reimport_is_unchanged_newer_replaces_older_is_ignored(tmp_path: Path, home: Path) -> None:
    import_into(home, OSV)
    first = snapshot(home)
    import_into(home, OSV)
    assert snapshot(home) == first
    record = json.loads((OSV / "pypi" / "PYSEC-2018-28.json").read_text())
    record["modified"] = "2030-01-01T00:00:00Z"
    record["affected"][0]["ranges"][1]["events"][1]["fixed"] = "2.21.0"
    (tmp_path / "newer.json").write_text(json.dumps(record))
    import_into(home, tmp_path / "newer.json")
    changed = snapshot(home)
    assert changed != first
    record["modified"] = "2000-01-01T00:00:00Z"
    (tmp_path / "older.json").write_text(json.dumps(record))
    import_into(home, tmp_path / "older.json")
    assert snapshot(home) == changed
    payloads = [e["payload"] for e in vulndb_events(home)]
    assert [p["unchanged"] for p in payloads] == [0, len(RECORDS), 0, 0]
    assert [p["updated"] for p in payloads] == [0, 0, 1, 0]
    assert payloads[-1]["older"] == 1
    with VulnDb.open(home) as db:  # the old affected rows went with the old record
        specs = [
            c.spec for c in db.candidates("PyPI", "requests") if c.record_id == "PYSEC-2018-28"
        ]
    assert len(specs) == 1 and "2.21.0" in json.dumps(specs[0])


def test_corrupt_record_in_archive_fails_whole_import(tmp_path: Path, home: Path) -> None:
    import_into(home, EXTRA)
    before = snapshot(home)
    archive = all_zip(tmp_path / "all.zip", {"ZZZ-broken.json": b'{"id": "X-1", "modified": 1}'})
    with pytest.raises(OsvRecordError) as caught:
        import_into(home, archive)
    assert caught.value.source == f"{archive}!ZZZ-broken.json"
    assert caught.value.path == "modified"
    assert snapshot(home) == before
    assert len(vulndb_events(home)) == 1
    with VulnDb.open(home) as db:
        assert db.candidates("npm", "minimist") == []


def test_skip_invalid_imports_the_rest_and_lists_what_was_skipped(
    tmp_path: Path, home: Path
) -> None:
    archive = all_zip(tmp_path / "all.zip", {"ZZZ-broken.json": b"{not json"})
    import_into(home, archive, skip_invalid=True)
    payload = vulndb_events(home)[0]["payload"]
    assert payload["skipped"] == 1 and payload["added"] == len(RECORDS)
    assert payload["skipped_records"][0]["source"].endswith("!ZZZ-broken.json")


@pytest.mark.parametrize("name", ["../evil.json", "/abs.json", "a/../../b.json", "c:\\x.json"])
def test_unsafe_member_names_are_refused(tmp_path: Path, name: str) -> None:
    archive = make_zip(tmp_path / "bad.zip", {name: b"{}"})
    with pytest.raises(ArchiveError, match="unsafe name"):
        list(read_zip(archive))


def test_oversized_member_and_truncated_archive(tmp_path: Path, home: Path) -> None:
    big = make_zip(tmp_path / "big.zip", {"big.json": b" " * (4 * 1024 * 1024 + 1)})
    with pytest.raises(OsvRecordError, match="over"):
        list(read_zip(big))
    good = all_zip(tmp_path / "all.zip")
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ArchiveError):
        import_into(home, truncated)
    with pytest.raises(VulnDbMissingError):  # nothing was imported: scans refuse it
        VulnDb.open(home)


def test_non_osv_inputs_are_refused(tmp_path: Path, home: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ScanInputError, match="neither"):
        import_into(home, tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ScanInputError, match="no OSV records"):
        import_into(home, tmp_path / "empty")
    with pytest.raises(VulnDbMissingError):
        VulnDb.open(tmp_path / "nowhere")


def test_verify_detects_a_record_changed_behind_the_database(home: Path) -> None:
    import_into(home, OSV)
    with sqlite3.connect(db_path(home)) as raw:
        raw.execute("UPDATE records SET data = CAST('{}' AS BLOB) WHERE id = 'DSA-3029-1'")
    with VulnDb.open(home) as db, pytest.raises(Exception, match="DSA-3029-1"):
        db.compute_snapshot()
