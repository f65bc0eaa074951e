"""What the access check does beyond the matrix: the recorded actor is the authenticated one,
signing is the caller's own, a free-text actor is refused once access is set up, a refusal
happens before any lookup, and setup mode (no principal yet) works as before."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from immutrail.access.errors import INVALID_TOKEN
from immutrail.keys.keystore import KEYS_DIR
from immutrail.ledger.event import parse_entry
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import World, invoke, size

OSV = sorted((Path(__file__).parents[2] / "examples" / "demo" / "osv").glob("*.json"))
UNKNOWN_DIGEST = "sha256:" + "0" * 64


def events_since(home: Path, start: int) -> list[dict]:
    with open_ledger(home) as ledger:
        return [parse_entry(row.data).to_dict() for row in ledger.entries(EntryFilter(start=start))]


def keyid_of(world: World, principal: str) -> str:
    return world.key_file(principal).stem


# -- the recorded actor --------------------------------------------------------------------------


def test_events_name_the_authenticated_caller_and_carry_its_signature(world: World) -> None:
    start = size(world.home)
    result = invoke(
        world.home, ["vulndb", "import"], [str(p) for p in OSV], credentials=["--as", "p-operator"]
    )
    assert result.code == 0, result
    (event,) = [e for e in events_since(world.home, start) if e["type"] == "vulndb.imported"]
    assert event["actor"] == "p-operator"
    assert event["signature"]["keyid"] == keyid_of(world, "p-operator")

    start = size(world.home)
    token = world.tokens["p-operator"]
    result = invoke(
        world.home, ["vulndb", "import"], [str(p) for p in OSV], credentials=["--token", token]
    )
    assert result.code == 0, result
    (event,) = [e for e in events_since(world.home, start) if e["type"] == "vulndb.imported"]
    assert event["actor"] == "p-operator" and "signature" not in event  # a token cannot sign

    verified = invoke(world.home, ["ledger", "verify"], credentials=["--as", "p-auditor"]).json()
    assert verified["ok"] is True and verified["signatures_verified"] >= 1


def test_ledger_append_records_the_caller_never_a_typed_actor(world: World, tmp_path: Path) -> None:
    start = size(world.home)
    made = invoke(
        world.home,
        ["ledger", "append"],
        ["--type", "note.added", "--subject", "x"],
        credentials=["--as", "root"],
    )
    assert made.code == 0, made
    (event,) = events_since(world.home, start)
    assert event["actor"] == "root" and event["signature"]["keyid"] == keyid_of(world, "root")

    for extra in (["--actor", "mallory"], ["--sign-key", str(world.key_file("root"))]):
        refused = invoke(
            world.home,
            ["ledger", "append"],
            ["--type", "note.added", "--subject", "x", *extra],
            credentials=["--as", "root"],
        )
        assert refused.code == 2 and "setup mode only" in refused.stderr, refused
    batch = tmp_path / "batch.jsonl"
    batch.write_text(
        json.dumps({"type": "note.added", "actor": "mallory", "subject": "x", "payload": {}})
    )
    refused = invoke(
        world.home, ["ledger", "append"], ["--batch", str(batch)], credentials=["--as", "root"]
    )
    assert refused.code == 2 and "other actors (mallory)" in refused.stderr, refused
    assert size(world.home) == start + 1


@pytest.mark.parametrize("how", [["--actor", "mallory"], "env"])
def test_a_typed_actor_is_refused_once_access_is_set_up(world: World, how: object) -> None:
    start = size(world.home)
    env = {"IMMUTRAIL_ACTOR": "mallory"} if how == "env" else None
    extra = [] if how == "env" else list(how)  # type: ignore[call-overload]
    result = invoke(
        world.home,
        ["vulndb", "import"],
        [*map(str, OSV), *extra],
        credentials=["--as", "p-operator"],
        env=env,
    )
    assert result.code == 2, result
    assert result.stderr.startswith("error: --actor (or IMMUTRAIL_ACTOR) is not accepted")
    assert "--as PRINCIPAL" in result.stderr
    assert size(world.home) == start


# -- signing is the caller's own -----------------------------------------------------------------


def test_signing_is_always_the_callers_own(world: World) -> None:
    start = size(world.home)
    other = invoke(
        world.home,
        ["sign", world.digest],
        ["--principal", "root"],
        credentials=["--as", "p-builder"],
    )
    assert other.code == 2 and "you cannot sign as root" in other.stderr, other
    token = invoke(
        world.home, ["sign", world.digest], credentials=["--token", world.tokens["p-builder"]]
    )
    assert token.code == 2 and "a token cannot sign" in token.stderr, token
    for nothing in ("", "key:", "  "):  # a prefix of every key id used to match any key
        named = invoke(
            world.home,
            ["sign", world.digest],
            ["--key", nothing],
            credentials=["--as", "p-builder"],
        )
        assert named.code == 2 and "is not a key id" in named.stderr, named
    assert size(world.home) == start

    signed = invoke(world.home, ["sign", world.digest], credentials=["--as", "p-builder"])
    assert signed.code == 0, signed
    assert signed.json()["principal"] == "p-builder"
    assert signed.json()["keyid"] == keyid_of(world, "p-builder")
    event = events_since(world.home, signed.json()["ledger_index"])[0]
    assert (event["type"], event["actor"]) == ("image.signed", "p-builder")


# -- keys ----------------------------------------------------------------------------------------


def test_own_keys_need_a_key_and_others_need_keys_manage(world: World) -> None:
    start = size(world.home)
    by_token = invoke(
        world.home,
        ["keys", "generate"],
        ["--principal", "p-deployer", "--no-passphrase"],
        credentials=["--token", world.tokens["p-deployer"]],
    )
    assert by_token.code == 1 and "a token cannot create keys" in by_token.stderr, by_token
    auditor = invoke(
        world.home,
        ["keys", "generate"],
        ["--principal", "p-auditor", "--no-passphrase"],
        credentials=["--as", "p-auditor"],
    )
    assert auditor.code == 1 and "may not keys.manage.own" in auditor.stderr, auditor
    assert size(world.home) == start

    authenticating_key = keyid_of(world, "p-deployer")
    made = invoke(
        world.home,
        ["keys", "generate"],
        ["--principal", "p-deployer", "--no-passphrase"],
        credentials=["--as", "p-deployer"],
    )
    assert made.code == 0, made
    new_key = made.json()["keyid"]
    (event,) = events_since(world.home, start)
    assert (event["type"], event["actor"]) == ("key.created", "p-deployer")
    # announced with the key the caller authenticated with: the chain of keys is in the ledger
    assert event["signature"]["keyid"] == authenticating_key

    revoked = invoke(
        world.home,
        ["keys", "revoke", new_key],
        ["--reason", "rotated"],
        credentials=["--as", "p-deployer"],
    )
    assert revoked.code == 0, revoked
    revocation = events_since(world.home, start + 1)[0]
    assert revocation["actor"] == "p-deployer"
    assert revocation["signature"]["keyid"] in (authenticating_key, new_key)
    (world.home / KEYS_DIR / "p-deployer" / f"{new_key}.key").unlink()  # keep one key per principal


# -- a refusal happens before any lookup --------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "words", "existing", "unknown"),
    [
        ("p-auditor", ["scan"], ["{digest}"], [UNKNOWN_DIGEST]),
        (
            "p-auditor",
            ["artifact", "export"],
            ["{digest}", "-o", "{tmp}/x.tar"],
            [UNKNOWN_DIGEST, "-o", "{tmp}/x.tar"],
        ),
        ("p-deployer", ["principal", "show"], ["root"], ["nobody"]),
        (
            "p-auditor",
            ["keys", "revoke"],
            ["{spare}", "--reason", "r"],
            ["0" * 64, "--reason", "r"],
        ),
        ("p-builder", ["token", "revoke"], ["{token}"], ["0123456789abcdef"]),
    ],
)
def test_a_refused_caller_learns_nothing_about_what_exists(
    world: World, caller: str, words: list[str], existing: list[str], unknown: list[str]
) -> None:
    from immutrail.access.tokens import split_token

    values = {
        "digest": world.digest,
        "tmp": str(world.tmp),
        "spare": world.spare_key,
        "token": split_token(world.tokens["p-deployer"])[0],
    }
    answers = []
    for args in (existing, unknown):
        start = size(world.home)
        result = invoke(
            world.home, words, [a.format(**values) for a in args], credentials=["--as", caller]
        )
        assert result.code in (1, 2) and result.stdout == "", result
        assert size(world.home) == start
        answers.append((result.code, result.stderr.replace(args[0].format(**values), "REF")))
    assert answers[0] == answers[1]


# -- setup mode and init --admin -----------------------------------------------------------------


def test_setup_mode_keeps_the_typed_actor(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert invoke(home, ["init"]).code == 0
    made = invoke(
        home, ["keys", "generate"], ["--principal", "alice", "--no-passphrase", "--actor", "bob"]
    )
    assert made.code == 0, made
    assert (
        invoke(
            home, ["ledger", "append"], ["--type", "t.x", "--subject", "s", "--actor", "carol"]
        ).code
        == 0
    )
    shown = invoke(home, ["keys", "list"], credentials=["--as", "whoever"])  # --as is a name here
    assert shown.code == 0, shown
    assert [e["actor"] for e in events_since(home, 0)] == ["bob", "carol"]
    refused = invoke(
        home, ["ledger", "list"], credentials=["--token", "imt_0123456789abcdef_" + "0" * 64]
    )
    assert refused.code == 1 and "access control is not set up" in refused.stderr
    listed = invoke(tmp_path / "never-initialized", ["artifact", "list"])
    assert listed.code == 0 and listed.json()["images"] == []


def test_init_admin_turns_access_control_on_at_creation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = invoke(
        home, ["init"], ["--admin", "ada", "--email", "ada@example.org", "--no-passphrase"]
    )
    assert made.code == 0, made
    admin = made.json()["admin"]
    assert admin["name"] == "ada" and admin["bootstrap"] is True
    assert admin["email"] == "ada@example.org" and admin["key"]["encrypted"] is False
    assert [r["role"] for r in admin["roles"]] == ["admin"]

    anonymous = invoke(home, ["ledger", "list"])
    assert anonymous.code == 1 and anonymous.stderr.startswith("error: authentication required")
    assert invoke(home, ["ledger", "list"], credentials=["--as", "ada"]).code == 0

    again = invoke(home, ["init"], ["--admin", "ada", "--no-passphrase"])
    assert again.code == 0 and again.json()["admin"]["name"] == "ada"
    other = invoke(home, ["init"], ["--admin", "eve", "--no-passphrase"])
    assert other.code == 2 and "already set up" in other.stderr
    lonely = invoke(tmp_path / "h2", ["init"], ["--email", "x@example.org"])
    assert lonely.code == 2 and "go with --admin" in lonely.stderr
    assert not (tmp_path / "h2").exists()


def test_a_token_is_refused_alike_whatever_is_wrong(world: World) -> None:
    answers = {
        invoke(world.home, ["ledger", "list"], credentials=["--token", world.tokens[t]]).stderr
        for t in ("revoked", "expired", "p-gone")
    }
    assert answers == {f"error: {INVALID_TOKEN}"}
