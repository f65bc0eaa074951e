"""Verify an evidence bundle offline: no database, no network, nothing but the bundle's bytes.

Checks, in order, each failure naming its place (a JSON path, and the ledger index when there is
one):

1. the file is the bundle's one spelling (RFC 8785 canonical JSON) and has the format's shape;
2. the checkpoint is signed by the trusted ledger key (``--vkey``, else a witness folder's key,
   else the key the bundle names: trust on first use, and the report says so); the later
   checkpoint too, and the consistency proof from the one to the other holds;
3. every event is a valid event and its RFC 6962 inclusion proof leads to the checkpoint's root;
4. every key was announced by an included ``key.created``; every actor signature on an event and
   every attestation's DSSE signature verifies against such a key, announced before the signed
   thing and not revoked before it;
5. every attestation's OCI manifest and content hash to what its ``artifact.attached`` recorded,
   and a signed statement names the image it is attached to;
6. the answer re-derived from the proven events (with the queries' own code) equals the stated
   answer, the events are exactly those it cites, and the attestations those it relies on.

Imports stay within ``immutrail.crypto``, the ledger's event and Merkle modules and this package:
the verifier runs anywhere the bundle is copied to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from immutrail.crypto.canonical import canonical_json, parse_strict_json
from immutrail.crypto.checkpoint import Checkpoint, open_checkpoint
from immutrail.crypto.dsse import verify_envelope
from immutrail.crypto.errors import CanonicalizationError, CryptoError, NoteError
from immutrail.crypto.keys import PublicKey, key_id, load_public_key_pem
from immutrail.crypto.note import Ed25519NoteVerifier
from immutrail.files import read_capped, read_capped_text
from immutrail.ledger import witness as witness_folder
from immutrail.ledger.errors import EventFormatError, LedgerInputError
from immutrail.ledger.event import MAX_ENTRY_BYTES, parse_entry, verify_event_signature
from immutrail.ledger.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion

from . import vocabulary as v
from . import wire
from .errors import AuditInputError, BundleVerificationError, Problem
from .queries import Query, cited_in, query_from_json, run_query
from .source import Indexed, ListSource, manifest_kind, parse_manifest

TRUST_VKEY = "vkey"
TRUST_WITNESS = "witness"
TRUST_TOFU = "trust-on-first-use"


@dataclass
class BundleReport:
    """What a verification found; ``ok`` when there is no problem."""

    size: int = 0
    trust: str = TRUST_TOFU
    origin: str | None = None
    vkey: str | None = None
    query: dict[str, Any] | None = None
    answer: dict[str, Any] | None = None
    checkpoint_size: int | None = None
    checkpoint_root: bytes | None = None
    latest_size: int | None = None
    events: int = 0
    event_signatures: int = 0
    attestations: int = 0
    dsse_signatures: int = 0
    keys: int = 0
    witnessed: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, where: str, message: str) -> None:
        self.problems.append(Problem(where, message))

    def raise_for_problems(self) -> None:
        if self.problems:
            raise BundleVerificationError(self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "bytes": self.size,
            "trust": self.trust,
            "origin": self.origin,
            "vkey": self.vkey,
            "checkpoint_size": self.checkpoint_size,
            "latest_size": self.latest_size,
            "events": self.events,
            "event_signatures": self.event_signatures,
            "attestations": self.attestations,
            "dsse_signatures": self.dsse_signatures,
            "keys": self.keys,
            "witnessed": self.witnessed,
            "query": self.query,
            "answer": self.answer,
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class _Key:
    keyid: str
    public: PublicKey
    created: int
    revoked: int | None


def read_bundle_file(path: Path) -> bytes:
    """A bundle's bytes; AuditInputError when the file cannot be read or is too large."""
    try:
        return read_capped(path, wire.MAX_BUNDLE_BYTES)
    except OSError as exc:
        raise AuditInputError(f"cannot read {path}: {exc.strerror or exc}") from exc


def parse_vkey(value: str) -> Ed25519NoteVerifier:
    """A ``--vkey`` in the signed-note ``name+hash+base64`` form, or ``@FILE`` holding one."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            value = read_capped_text(path, witness_folder.MAX_VKEY_BYTES).strip()
        except OSError as exc:
            raise AuditInputError(
                f"cannot read the verifier key file {path}: {exc.strerror or exc}"
            ) from exc
        except UnicodeDecodeError as exc:
            raise AuditInputError(f"the verifier key file {path} is not UTF-8") from exc
    try:
        return Ed25519NoteVerifier.from_vkey(value)
    except NoteError as exc:
        raise AuditInputError(f"--vkey: {exc.diagnostics()}") from exc


def verify_bundle(
    data: bytes, *, vkey: str | None = None, witnesses: Sequence[Path] = ()
) -> BundleReport:
    """Check everything in the bundle (see the module docstring); never raises on bad content.

    AuditInputError only for bad *arguments*: a malformed ``vkey`` or an unreadable witness.
    """
    trusted = parse_vkey(vkey) if vkey is not None else None
    held: list[tuple[str, str]] = []
    witness_keys: list[tuple[Path, str]] = []
    for folder in witnesses:
        try:
            folder_vkey, notes = witness_folder.load(folder)
        except (LedgerInputError, OSError) as exc:
            raise AuditInputError(f"witness {folder}: {exc}") from exc
        if folder_vkey is not None:
            witness_keys.append((folder, folder_vkey))
        held.extend((n.source, n.note) for n in notes)
    report = BundleReport(size=len(data))
    if len(data) > wire.MAX_BUNDLE_BYTES:
        report.fail("bundle", f"larger than the {wire.MAX_BUNDLE_BYTES}-byte limit")
        return report
    document = _parse(data, report)
    if document is None:
        return report
    try:
        _Verifier(document, report, trusted, witness_keys, held).run()
    except wire.WireError as exc:
        report.fail(exc.where, str(exc))
    _spelling(data, document, report)
    return report


def _depth(value: object) -> int:
    """How deeply ``value`` nests, one level at a time (no recursion on untrusted input)."""
    level, depth = [value], 0
    while level:
        depth += 1
        below: list[object] = []
        for item in level:
            if isinstance(item, dict):
                below.extend(v for v in item.values() if isinstance(v, dict | list))
            elif isinstance(item, list):
                below.extend(v for v in item if isinstance(v, dict | list))
        level = below
    return depth - 1


class _DuplicateError(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, item in pairs:
        if key in result:
            raise _DuplicateError(key)
        result[key] = item
    return result


def _constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _parse(data: bytes, report: BundleReport) -> dict[str, Any] | None:
    """The bundle as JSON, leniently: the spelling is checked last, so that a changed value is
    named by the check it fails rather than by its byte offset."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as bad:
        head = data[: bad.start].decode("utf-8")
        report.fail(
            f"byte {bad.start} (in {wire.path_at(head, len(head))})",
            f"not valid UTF-8 ({bad.reason})",
        )
        return None
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_constant)
    except json.JSONDecodeError as bad:
        offset = len(text[: bad.pos].encode("utf-8"))
        report.fail(
            f"byte {offset} (in {wire.path_at(text, bad.pos)})",
            f"not valid JSON: {bad.msg} (near {_near(data, offset)})",
        )
        return None
    except _DuplicateError as bad:
        report.fail("bundle", f"an object names the member {bad.key!r} twice")
        return None
    except (RecursionError, ValueError) as bad:
        report.fail("bundle", f"not valid JSON: {bad}")
        return None
    if not isinstance(value, dict):
        report.fail("bundle", "must be a JSON object")
        return None
    if _depth(value) > wire.MAX_DEPTH:
        report.fail("bundle", f"nested deeper than {wire.MAX_DEPTH} levels")
        return None
    return value


def _spelling(data: bytes, value: object, report: BundleReport) -> None:
    """The catch-all, checked last: the bytes are the one RFC 8785 spelling of what they hold."""
    try:
        canonical = canonical_json(value)
    except CanonicalizationError as exc:
        report.fail("bundle", f"has no RFC 8785 canonical form: {exc}")
        return
    if canonical == data:
        return
    offset = next(
        (i for i, (a, b) in enumerate(zip(data, canonical, strict=False)) if a != b),
        min(len(data), len(canonical)),
    )
    text = data.decode("utf-8")
    at = len(data[:offset].decode("utf-8", "ignore"))
    report.fail(
        f"byte {offset} (in {wire.path_at(text, at)})",
        "not in the bundle's one spelling (RFC 8785 canonical JSON: no whitespace, members "
        f"sorted, shortest escapes and numbers) near {_near(data, offset)}",
    )


def _near(data: bytes, offset: int) -> str:
    return repr(data[max(0, offset - 20) : offset + 20].decode("utf-8", "replace"))


def _short(value: object, limit: int = 120) -> str:
    shown = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return shown if len(shown) <= limit else shown[: limit - 1] + "…"


class _Verifier:
    def __init__(
        self,
        document: dict[str, Any],
        report: BundleReport,
        trusted: Ed25519NoteVerifier | None,
        witness_keys: Sequence[tuple[Path, str]],
        held: Sequence[tuple[str, str]],
    ) -> None:
        self.doc = document
        self.report = report
        self.trusted = trusted
        self.witness_keys = witness_keys
        self.held = held
        self.events: dict[int, Indexed] = {}
        """Events whose format and inclusion proof verified, by ledger index."""
        self.positions: dict[int, int] = {}
        """Ledger index -> position in the bundle's events array."""
        self.keys: dict[str, _Key] = {}
        self.used_keys: set[str] = set()
        self.manifests: dict[str, bytes] = {}
        self.attested: set[int] = set()
        self.key_positions: dict[str, int] = {}

    def fail(self, where: str, message: str) -> None:
        self.report.fail(where, message)

    def event_where(self, index: int, suffix: str = "") -> str:
        position = self.positions.get(index)
        at = f"events[{position}]" if position is not None else "events"
        return f"{at} (ledger index {index}){suffix}"

    # -- 1. shape -------------------------------------------------------------------------------

    def run(self) -> None:
        doc = wire.obj(self.doc, "bundle", wire.TOP_FIELDS)
        if doc["format"] != wire.FORMAT:
            self.fail("format", f"is {_short(doc['format'])}, not {wire.FORMAT}")
            return
        query = doc["query"]
        if not isinstance(query, dict):
            raise wire.WireError("query", "must be a JSON object")
        self.report.query = query
        answer = doc["answer"]
        if not isinstance(answer, dict):
            raise wire.WireError("answer", "must be a JSON object")
        self.report.answer = answer
        ledger = wire.obj(doc["ledger"], "ledger", ("origin", "vkey"))
        origin = wire.text(ledger["origin"], "ledger.origin")
        named = wire.text(ledger["vkey"], "ledger.vkey")
        self.report.origin, self.report.vkey = origin, named
        latest = wire.obj(doc["latest"], "latest", ("checkpoint", "consistency"))
        consistency = wire.hashes(latest["consistency"], "latest.consistency")
        anchor_note = wire.text(doc["checkpoint"], "checkpoint")
        latest_note = wire.text(latest["checkpoint"], "latest.checkpoint")
        entries = self._event_entries(doc["events"])
        key_entries = self._key_entries(doc["keys"])
        attestations = self._attestation_entries(doc["attestations"])

        # -- 2. trust and checkpoints ----------------------------------------------------------
        verifier = self._trust(named, origin)
        anchor = self._checkpoint(anchor_note, "checkpoint", verifier, origin)
        later = self._checkpoint(latest_note, "latest.checkpoint", verifier, origin)
        if anchor is not None:
            self.report.checkpoint_size = anchor.size
            self.report.checkpoint_root = anchor.root_hash
        if later is not None:
            self.report.latest_size = later.size
        if anchor is not None and later is not None:
            try:
                verify_consistency(
                    anchor.size, later.size, anchor.root_hash, later.root_hash, consistency
                )
            except ProofError as exc:
                self.fail(
                    "latest.consistency",
                    f"does not prove that the tree of {anchor.size} entries is a prefix of the "
                    f"tree of {later.size}: {exc}",
                )
        self._witnesses(verifier, origin, anchor, later)

        # -- 3. events ---------------------------------------------------------------------------
        for position, index, event_json, proof in entries:
            self._event(position, index, event_json, proof, anchor)
        self.report.events = len(self.events)

        # -- 4. keys and signatures ----------------------------------------------------------------
        for position, keyid, pem, created, revoked in key_entries:
            self._key(position, keyid, pem, created, revoked)
        for index, item in sorted(self.events.items()):
            if item.event.signature is not None:
                self._event_signature(index, item)

        # -- 5. attestations -----------------------------------------------------------------------
        for position, index, manifest, content in attestations:
            self._attestation(position, index, manifest, content)
        self.report.attestations = len(self.attested)
        unused = sorted(set(self.keys) - self.used_keys)
        for keyid in unused:
            self.fail(
                f"keys[{self.key_positions.get(keyid, '?')}] (key {keyid[:16]}…)",
                "no event signature or attestation in the bundle is signed by this key",
            )
        self.report.keys = len(self.keys)

        # -- 6. the answer -------------------------------------------------------------------------
        if anchor is not None:
            self._answer(query, answer, anchor.size, {p[1] for p in entries}, attestations)

    def _event_entries(self, value: object) -> list[tuple[int, int, object, list[bytes]]]:
        found = []
        previous = -1
        for position, raw in enumerate(wire.array(value, "events")):
            where = f"events[{position}]"
            entry = wire.obj(raw, where, ("event", "inclusion", "index"))
            index = wire.integer(entry["index"], f"{where}.index")
            if index <= previous:
                raise wire.WireError(
                    f"events[{position - 1}].index, {where}.index",
                    f"{previous} and {index} are not ascending: events are listed once each, "
                    "in ledger order",
                )
            previous = index
            self.positions[index] = position
            found.append(
                (
                    position,
                    index,
                    entry["event"],
                    wire.hashes(entry["inclusion"], f"{where}.inclusion"),
                )
            )
        return found

    def _key_entries(self, value: object) -> list[tuple[int, str, str, int, int | None]]:
        found = []
        previous = -1
        for position, raw in enumerate(wire.array(value, "keys")):
            where = f"keys[{position}]"
            entry = wire.obj(raw, where, ("index", "keyid", "public_key", "revoked_index"))
            index = wire.integer(entry["index"], f"{where}.index")
            if index <= previous:
                raise wire.WireError(
                    f"keys[{position - 1}].index, {where}.index",
                    f"{previous} and {index} are not ascending: keys are listed once each, in "
                    "the order the ledger announced them",
                )
            previous = index
            self.key_positions[str(entry["keyid"])] = position
            revoked = entry["revoked_index"]
            found.append(
                (
                    position,
                    wire.text(entry["keyid"], f"{where}.keyid"),
                    wire.text(entry["public_key"], f"{where}.public_key"),
                    index,
                    None if revoked is None else wire.integer(revoked, f"{where}.revoked_index"),
                )
            )
        return found

    def _attestation_entries(self, value: object) -> list[tuple[int, int, bytes, bytes]]:
        found = []
        previous = -1
        for position, raw in enumerate(wire.array(value, "attestations")):
            where = f"attestations[{position}]"
            entry = wire.obj(raw, where, ("content", "index", "manifest"))
            index = wire.integer(entry["index"], f"{where}.index")
            if index <= previous:
                raise wire.WireError(
                    f"attestations[{position - 1}].index, {where}.index",
                    f"{previous} and {index} are not ascending: attestations are listed once "
                    "each, in ledger order",
                )
            previous = index
            found.append(
                (
                    position,
                    index,
                    wire.unb64(entry["manifest"], f"{where}.manifest"),
                    wire.unb64(entry["content"], f"{where}.content"),
                )
            )
        return found

    # -- 2. trust ----------------------------------------------------------------------------------

    def _trust(self, named: str, origin: str) -> Ed25519NoteVerifier | None:
        try:
            in_bundle = Ed25519NoteVerifier.from_vkey(named)
        except NoteError as exc:
            self.fail("ledger.vkey", exc.diagnostics())
            in_bundle = None
        if in_bundle is not None and in_bundle.vkey != named:
            self.fail("ledger.vkey", f"is not spelled as the key's one form {in_bundle.vkey}")
        chosen = self.trusted
        if chosen is not None:
            self.report.trust = TRUST_VKEY
        elif self.witness_keys:
            folder, text = self.witness_keys[0]
            try:
                chosen = Ed25519NoteVerifier.from_vkey(text)
            except NoteError as exc:
                raise AuditInputError(f"witness {folder}: its vkey file: {exc}") from exc
            self.report.trust = TRUST_WITNESS
        else:
            chosen = in_bundle
            self.report.trust = TRUST_TOFU
        if chosen is not None and chosen.vkey != named:
            self.fail(
                "ledger.vkey",
                f"the bundle names the ledger key {named}, but the trusted key is "
                f"{chosen.vkey}: this bundle is not from that ledger",
            )
        for folder, text in self.witness_keys:
            if chosen is not None and text != chosen.vkey:
                self.fail(
                    f"witness {folder}",
                    f"trusts the ledger key {text}, not {chosen.vkey}: the ledger was replaced",
                )
        if chosen is not None and chosen.name != origin:
            self.fail("ledger.origin", f"is {origin!r}, but the ledger key is {chosen.name!r}")
        return chosen

    def _checkpoint(
        self, note: str, where: str, verifier: Ed25519NoteVerifier | None, origin: str
    ) -> Checkpoint | None:
        if verifier is None:
            return self._claimed(note, where)
        try:
            return open_checkpoint(note, verifier, origin)
        except CryptoError as exc:
            self.fail(where, f"not a checkpoint signed by the trusted key: {exc.diagnostics()}")
            return self._claimed(note, "")

    def _claimed(self, note: str, where: str) -> Checkpoint | None:
        """The checkpoint the note claims, unverified: the events are still checked against it,
        so one changed byte in the note does not hide a changed event."""
        body, sep, _ = note.rpartition("\n\n")
        try:
            if not sep:
                raise NoteError("no blank line before the signatures")
            return Checkpoint.parse(body + "\n")
        except NoteError as exc:
            if where:
                self.fail(where, f"not a checkpoint: {exc}")
            return None

    def _witnesses(
        self,
        verifier: Ed25519NoteVerifier | None,
        origin: str,
        anchor: Checkpoint | None,
        later: Checkpoint | None,
    ) -> None:
        if not self.held and not self.witness_keys:
            return
        ours = {c.size: c.root_hash for c in (anchor, later) if c is not None}
        matched = 0
        for source, note in self.held:
            if verifier is None:
                break
            try:
                held = open_checkpoint(note, verifier, origin)
            except CryptoError as exc:
                self.fail(f"witness {source}", f"not signed by the ledger key: {exc}")
                continue
            root = ours.get(held.size)
            if root is None:
                continue
            if root != held.root_hash:
                self.fail(
                    f"witness {source}",
                    f"holds another root for size {held.size}: the ledger forked, or the "
                    "bundle's checkpoint was replaced",
                )
                continue
            matched += 1
        self.report.witnessed = matched
        if matched == 0:
            sizes = " or ".join(str(s) for s in sorted(ours)) or "?"
            self.fail(
                "witness",
                f"no witnessed checkpoint of size {sizes} to compare with (publish checkpoints "
                "with `ledger checkpoint --publish DIR` and build the bundle after one)",
            )

    # -- 3. events -----------------------------------------------------------------------------

    def _event(
        self,
        position: int,
        index: int,
        event_json: object,
        proof: list[bytes],
        anchor: Checkpoint | None,
    ) -> None:
        where = f"events[{position}] (ledger index {index})"
        try:
            entry = canonical_json(event_json)
            event = parse_entry(entry)
        except (CryptoError, EventFormatError) as exc:
            self.fail(f"{where}.event", f"not a valid ledger event: {exc}")
            return
        if len(entry) > MAX_ENTRY_BYTES:
            self.fail(
                f"{where}.event", f"larger than a ledger entry can be ({MAX_ENTRY_BYTES} bytes)"
            )
            return
        if anchor is None:
            return
        if index >= anchor.size:
            self.fail(f"{where}.index", f"is not in the checkpoint's tree of {anchor.size}")
            return
        try:
            verify_inclusion(index, anchor.size, leaf_hash(entry), proof, anchor.root_hash)
        except ProofError:
            self.fail(
                where,
                "its inclusion proof does not lead to the checkpoint's root: the event, its "
                "index or its proof was changed",
            )
            return
        self.events[index] = Indexed.of(index, event)

    # -- 4. keys and signatures ------------------------------------------------------------------

    def _key(self, position: int, keyid: str, pem: str, created: int, revoked: int | None) -> None:
        where = f"keys[{position}] (key {keyid[:16]}…)"
        announced = self.events.get(created)
        if announced is None:
            self.fail(
                where, f"its key.created at ledger index {created} is not a proven event here"
            )
            return
        if announced.type != v.KEY_CREATED or announced.event.subject != f"key:{keyid}":
            self.fail(where, f"ledger index {created} is not the key.created of key {keyid}")
            return
        if announced.payload.get("public_key") != pem:
            self.fail(f"{where}.public_key", "differs from the key its key.created announced")
            return
        try:
            public = load_public_key_pem(pem)
        except CryptoError as exc:
            self.fail(f"{where}.public_key", str(exc))
            return
        if key_id(public) != keyid:
            self.fail(f"{where}.keyid", f"is not the key id of its public key ({key_id(public)})")
            return
        if revoked is not None:
            revocation = self.events.get(revoked)
            if (
                revocation is None
                or revocation.type != v.KEY_REVOKED
                or revocation.event.subject != f"key:{keyid}"
                or revoked < created
            ):
                self.fail(
                    f"{where}.revoked_index",
                    f"ledger index {revoked} is not a proven key.revoked of this key",
                )
                return
        if keyid in self.keys:
            self.fail(where, "the key is listed twice")
            return
        self.keys[keyid] = _Key(keyid, public, created, revoked)

    def _usable(self, keyid: str, at: int) -> tuple[_Key | None, str | None]:
        """The key, if it may vouch for something recorded at ledger index ``at``."""
        key = self.keys.get(keyid)
        if key is None:
            return None, f"signed by key {keyid}, which no key.created in the bundle announces"
        if key.created >= at:
            return None, f"signed by key {keyid[:16]}…, announced only later (index {key.created})"
        if key.revoked is not None and key.revoked < at:
            return None, f"signed by key {keyid[:16]}…, revoked before (index {key.revoked})"
        return key, None

    def _event_signature(self, index: int, item: Indexed) -> None:
        signature = item.event.signature or {}
        key, why = self._usable(str(signature.get("keyid")), index)
        if key is None:
            self.fail(self.event_where(index, ".signature"), str(why))
            return
        self.used_keys.add(key.keyid)
        try:
            verify_event_signature(item.event, key.public)
        except (CryptoError, EventFormatError) as exc:
            self.fail(self.event_where(index, ".signature"), f"does not verify: {exc}")
            return
        self.report.event_signatures += 1

    # -- 5. attestations -------------------------------------------------------------------------

    def _attestation(self, position: int, index: int, manifest: bytes, content: bytes) -> None:
        where = f"attestations[{position}] (ledger index {index})"
        attached = self.events.get(index)
        if attached is None or attached.type != v.ATTACHED:
            self.fail(where, f"ledger index {index} is not a proven artifact.attached event here")
            return
        recorded = attached.payload
        image = attached.event.subject
        if _sha256(manifest) != recorded.get("artifact"):
            self.fail(
                f"{where}.manifest",
                f"its SHA-256 is {_sha256(manifest)}, "
                f"the ledger recorded {recorded.get('artifact')}",
            )
            return
        if _sha256(content) != recorded.get("blob") or len(content) != recorded.get("size"):
            self.fail(
                f"{where}.content",
                f"its SHA-256 is {_sha256(content)} ({len(content)} bytes), the ledger recorded "
                f"{recorded.get('blob')} ({recorded.get('size')} bytes)",
            )
            return
        parsed = parse_manifest(manifest)
        problem = _manifest_problem(parsed, image, recorded)
        if problem is not None:
            self.fail(f"{where}.manifest", problem)
            return
        assert parsed is not None
        if recorded.get("artifact_type") == v.IN_TOTO_PAYLOAD_TYPE and not self._statement(
            f"{where}.content", index, content, image, parsed
        ):
            return
        self.manifests[str(recorded["artifact"])] = manifest
        self.attested.add(index)

    def _statement(
        self, where: str, index: int, content: bytes, image: str, manifest: dict[str, Any]
    ) -> bool:
        try:
            envelope = parse_strict_json(content)
        except CryptoError as exc:
            self.fail(where, f"not a DSSE envelope: {exc}")
            return False
        if not isinstance(envelope, dict):
            self.fail(where, "not a DSSE envelope: not a JSON object")
            return False
        signatures = envelope.get("signatures")
        keyids = [
            str(s.get("keyid"))
            for s in (signatures if isinstance(signatures, list) else [])
            if isinstance(s, dict)
        ]
        usable: dict[str, PublicKey] = {}
        reasons = []
        for keyid in keyids:
            key, why = self._usable(keyid, index)
            if key is None:
                reasons.append(str(why))
            else:
                usable[keyid] = key.public
        if not usable:
            self.fail(where, "; ".join(reasons) or "the envelope carries no signature")
            return False
        try:
            payload = verify_envelope(envelope, usable, payload_type=v.IN_TOTO_PAYLOAD_TYPE)
            statement = parse_strict_json(payload)
        except CryptoError as exc:
            self.fail(where, f"the DSSE signature does not verify: {exc.diagnostics()}")
            return False
        self.used_keys.update(usable)
        self.report.dsse_signatures += 1
        problem = _statement_problem(statement, image, manifest_kind(manifest))
        if problem is not None:
            self.fail(where, problem)
            return False
        return True

    # -- 6. the answer -------------------------------------------------------------------------

    def _answer(
        self,
        query_json: dict[str, Any],
        stated: dict[str, Any],
        size: int,
        listed: set[int],
        attestations: Sequence[tuple[int, int, bytes, bytes]],
    ) -> None:
        for index, path in sorted(cited_in(stated).items()):
            if index not in listed:
                self.fail(
                    path,
                    f"cites ledger index {index}, which is not among the bundle's events "
                    "(an event was dropped)",
                )
        for key, value in query_json.items():
            if stated.get(key) != value:
                self.fail(
                    f"query.{key}",
                    f"asks {_short(value)}, but the answer is for {_short(stated.get(key))}",
                )
        try:
            query: Query = query_from_json(query_json)
        except AuditInputError as exc:
            self.fail("query", str(exc))
            return
        source = ListSource(self.events.values(), size, self.manifests)
        try:
            derived = run_query(query, source)
        except AuditInputError as exc:
            self.fail("query", f"cannot be answered from the bundle's events: {exc}")
            return
        difference = _first_difference(stated, derived.data, "answer")
        if difference is not None:
            path, said, found = difference
            self.fail(
                path,
                f"the bundle states {_short(said)}, but its proven events give {_short(found)}",
            )
        needed = set(derived.cited) | {k.created for k in self.keys.values()}
        needed |= {k.revoked for k in self.keys.values() if k.revoked is not None}
        for index in sorted(listed - needed):
            if index in self.events:
                self.fail(
                    self.event_where(index),
                    "is neither cited by the answer nor the announcement of a key it uses",
                )
        carried = {index for _, index, _, _ in attestations}
        for index in sorted(derived.attested - carried):
            self.fail(
                "attestations",
                f"the answer relies on the attestation attached at ledger index {index}, "
                "which the bundle does not carry",
            )
        for position, index, _, _ in attestations:
            if index in self.attested and index not in derived.attested:
                self.fail(
                    f"attestations[{position}] (ledger index {index})",
                    "is not an attestation the answer relies on",
                )


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _manifest_problem(
    manifest: dict[str, Any] | None, image: str, recorded: Mapping[str, Any]
) -> str | None:
    if manifest is None:
        return "is not a JSON object"
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image:
        return f"its subject is not the image {image} the ledger attached it to"
    layers = manifest.get("layers")
    first = layers[0] if isinstance(layers, list) and layers else None
    if (
        not isinstance(first, dict)
        or first.get("digest") != recorded.get("blob")
        or first.get("size") != recorded.get("size")
    ):
        return "its layer is not the content the ledger recorded"
    if manifest.get("artifactType") != recorded.get("artifact_type"):
        return f"its artifactType is not {recorded.get('artifact_type')!r} as recorded"
    return None


def _statement_problem(statement: object, image: str, kind: str | None) -> str | None:
    if not isinstance(statement, dict) or statement.get("_type") != v.STATEMENT_V1:
        return "the signed payload is not an in-toto Statement v1"
    wanted = image.removeprefix("sha256:")
    subjects = statement.get("subject")
    if not any(
        isinstance(s, dict)
        and isinstance(s.get("digest"), dict)
        and s["digest"].get("sha256") == wanted
        for s in (subjects if isinstance(subjects, list) else [])
    ):
        return f"the signed statement is not about the image {image}"
    if statement.get("predicateType") != kind:
        return (
            f"the signed predicate type {statement.get('predicateType')!r} is not the "
            f"manifest's {kind!r}"
        )
    return None


def _first_difference(
    stated: object, derived: object, path: str
) -> tuple[str, object, object] | None:
    """The first place (depth first, in key order) where two JSON values differ."""
    if isinstance(stated, dict) and isinstance(derived, dict):
        for key in sorted(set(stated) | set(derived)):
            if key not in stated:
                return f"{path}.{key}", "(nothing)", derived[key]
            if key not in derived:
                return f"{path}.{key}", stated[key], "(nothing)"
            found = _first_difference(stated[key], derived[key], f"{path}.{key}")
            if found is not None:
                return found
        return None
    if isinstance(stated, list) and isinstance(derived, list):
        for number, (a, b) in enumerate(zip(stated, derived, strict=False)):
            found = _first_difference(a, b, f"{path}[{number}]")
            if found is not None:
                return found
        if len(stated) != len(derived):
            return f"{path} (length)", len(stated), len(derived)
        return None
    if type(stated) is not type(derived) or stated != derived:
        return path, stated, derived
    return None
