"""`immutrail check`: real images with each violation, a clean one, whiteouts, records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from artifacts.conftest import make_repo
from artifacts.test_import import config_for, import_image, layer_of, oci_layout, write_folder
from immutrail.artifacts.builder import build
from immutrail.artifacts.statements import ledger_keys, read_attestations
from immutrail.artifacts.store import Store
from immutrail.baseline import BASELINE_PREDICATE, baseline_outcome
from immutrail.baseline.rules import RULES, Severity, rule_pack_digest
from immutrail.baseline.runner import EVENT_CHECKED, CheckResult, check_image
from immutrail.ledger.home import open_ledger
from immutrail.ledger.storage.interface import EntryFilter

from .conftest import AWS_KEY_ID, GITHUB_TOKEN, private_key_pem

RULES_DIR = Path(__file__).parent.parent / "data" / "baseline" / "rules"


def run_check(home: Path, reference: str, **kwargs: Any) -> CheckResult:
    ledger = open_ledger(home)
    try:
        return check_image(Store.for_home(home), ledger, home, reference, "user:test", **kwargs)
    finally:
        ledger.close()


def by_id(result: CheckResult) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in result.results}


def paths(result: dict[str, Any]) -> set[str]:
    return {str(e.get("path")) for e in result["evidence"]}


def events(home: Path, kind: str = EVENT_CHECKED) -> list[Any]:
    ledger = open_ledger(home)
    try:
        return list(ledger.entries(EntryFilter(type=kind)))
    finally:
        ledger.close()


def test_clean_image_passes_every_rule_and_is_attested(clean_repo: Path, home: Path) -> None:
    built = build(clean_repo / "image.yaml", home, tag="clean:1")

    result = run_check(home, "clean:1")

    failing = {r["id"]: r["evidence"] for r in result.results if r["status"] == "fail"}
    assert failing == {}  # no false positives on a hardened image
    assert [r["id"] for r in result.results] == [rule.id for rule in RULES]
    assert result.passed and result.digest == built.digest
    assert result.predicate["rule_pack"]["digest"] == rule_pack_digest()
    assert result.predicate["user_rules"] == [] and result.predicate["fail_on"] == "high"
    assert baseline_outcome(result.predicate).passed

    # The statement is signed by a ledger key, covers the image and holds the same predicate.
    store, ledger = Store.for_home(home), open_ledger(home)
    try:
        good, bad = read_attestations(store, built.digest, ledger_keys(ledger), BASELINE_PREDICATE)
    finally:
        ledger.close()
    assert bad == [] and [a.manifest for a in good] == [result.attestation]
    assert good[0].predicate == result.predicate

    [row] = events(home)
    assert row.subject == built.digest and row.index == result.ledger_index
    payload = json.loads(row.data)["payload"]
    assert payload["passed"] is True and payload["attestation"] == result.attestation
    assert payload["counts"]["failed"] == 0 and payload["counts"]["rules"] == len(RULES)


def test_every_violation_is_found_with_its_evidence(violating_repo: Path, home: Path) -> None:
    build(violating_repo / "image.yaml", home, tag="bad:1")

    result = run_check(home, "bad:1")
    rules = by_id(result)

    assert not result.passed
    statuses = {rule_id: r["status"] for rule_id, r in rules.items()}
    assert statuses == {
        "IMT-BL-001": "fail",
        "IMT-BL-002": "fail",
        "IMT-BL-003": "fail",
        "IMT-BL-004": "fail",
        "IMT-BL-005": "fail",
        "IMT-BL-006": "fail",
        "IMT-BL-007": "fail",
        "IMT-BL-008": "pass",  # from scratch: nothing to pin
        "IMT-BL-009": "fail",
        "IMT-BL-010": "fail",
        "IMT-BL-011": "fail",
        "IMT-BL-012": "fail",
    }
    assert {"/usr/sbin/sshd", "/etc/ssh/sshd_config", "config.Entrypoint"} <= paths(
        rules["IMT-BL-001"]
    )
    assert paths(rules["IMT-BL-002"]) == {"/root/.ssh/authorized_keys"}
    assert rules["IMT-BL-003"]["evidence"][0]["path"] == "config.User"
    [setuid] = rules["IMT-BL-004"]["evidence"]
    assert setuid["path"] == "/usr/local/bin/helper" and setuid["mode"] == "4755"
    assert paths(rules["IMT-BL-005"]) == {"/srv/shared/notes.txt"}
    [key] = rules["IMT-BL-006"]["evidence"]
    assert key["path"] == "/opt/app/id_ecdsa" and key["shadowed"] is False
    assert key["fingerprint"].startswith("sha256:") and len(key["fingerprint"]) == 23
    tokens = {(e["path"], e["pattern"]) for e in rules["IMT-BL-007"]["evidence"]}
    assert tokens == {
        ("/opt/app/.env", "github-token"),
        ("/opt/app/.env", "dotenv-secret"),
        ("/opt/app/settings.py", "aws-access-key-id"),
    }
    assert paths(rules["IMT-BL-010"]) == {"/root/.cache/pip", "/var/cache/apt"}
    tls = {(e["path"], e["detail"]) for e in rules["IMT-BL-011"]["evidence"]}
    assert tls == {
        ("/etc/nginx/nginx.conf", "enables TLSv1, TLSv1.1"),
        ("/etc/apache2/mods-enabled/ssl.conf", "enables TLSv1, TLSv1.1"),
    }
    assert paths(rules["IMT-BL-012"]) == {
        "/etc/nginx/nginx.conf",
        "/etc/apache2/mods-enabled/ssl.conf",
        "/etc/ssh/sshd_config",
        "/opt/app/logging.conf",
        "/opt/app/.env",
        "config.Env",
    }
    for rule in RULES:
        assert rules[rule.id]["controls"] == list(rule.controls)
        assert rules[rule.id]["severity"] == str(rule.severity)

    # The secrets themselves never reach the attestation or the ledger.
    text = json.dumps(result.predicate) + "".join(row.data.decode() for row in events(home))
    for secret in (GITHUB_TOKEN, AWS_KEY_ID, "s3cr3t-Pa55", "PRIVATE KEY-----\nM"):
        assert secret not in text
    outcome = baseline_outcome(result.predicate)
    assert not outcome.passed and "IMT-BL-006 (critical)" in outcome.failed


def test_fail_on_and_allowed_setuid_are_recorded(violating_repo: Path, home: Path) -> None:
    build(violating_repo / "image.yaml", home, tag="bad:1")

    result = run_check(home, "bad:1", allow_setuid=["/usr/local/bin/helper"])

    assert by_id(result)["IMT-BL-004"]["status"] == "pass"
    assert result.predicate["allow_setuid"] == ["/usr/local/bin/helper"]


def _layout_with_deleted_key(tmp_path: Path, labels: dict[str, str]) -> Path:
    pem = private_key_pem()
    lower = layer_of({"etc/app/key.pem": pem, "bin/app": (b"#!/bin/sh\n", 0o755)})
    upper = layer_of({"etc/app/.wh.key.pem": b""})
    config = config_for(
        [lower, upper],
        config={
            "User": "65534:65534",
            "Labels": labels,
            "Healthcheck": {"Test": ["CMD", "/bin/app"]},
        },
    )
    files, _ = oci_layout([lower, upper], config=config)
    return write_folder(tmp_path / "layout", files)


def test_key_added_then_deleted_by_a_whiteout_is_still_found(tmp_path: Path, home: Path) -> None:
    layout = _layout_with_deleted_key(tmp_path, {})
    digest = import_image(layout, home).digest

    rules = by_id(run_check(home, digest))

    [key] = rules["IMT-BL-006"]["evidence"]
    assert key["path"] == "/etc/app/key.pem" and key["layer"] == 0 and key["shadowed"] is True
    # An imported image with no provenance and no base annotation cannot prove its base.
    assert rules["IMT-BL-008"]["status"] == "fail"
    assert "not recorded" in rules["IMT-BL-008"]["evidence"][0]["detail"]


@pytest.mark.parametrize(
    ("labels", "status"),
    [
        ({"org.opencontainers.image.base.name": "docker.io/library/debian:12"}, "fail"),
        (
            {
                "org.opencontainers.image.base.name": "docker.io/library/debian:12",
                "org.opencontainers.image.base.digest": "sha256:" + "ab" * 32,
            },
            "pass",
        ),
    ],
)
def test_base_named_by_labels(
    tmp_path: Path, home: Path, labels: dict[str, str], status: str
) -> None:
    digest = import_image(_layout_with_deleted_key(tmp_path, labels), home).digest

    assert by_id(run_check(home, digest))["IMT-BL-008"]["status"] == status


def test_key_replaced_in_an_upper_layer_and_base_pinned_by_provenance(
    tmp_path: Path, home: Path
) -> None:
    base_repo = make_repo(
        tmp_path / "base",
        {
            "image.yaml": "base: scratch\nlayers:\n  - source: app\n    destination: /opt/app\n",
            "app/key.pem": private_key_pem(),
        },
    )
    base = build(base_repo / "image.yaml", home).digest
    top_repo = make_repo(
        tmp_path / "top",
        {
            "image.yaml": f"base: {base}\nlayers:\n  - source: key.pem\n"
            "    destination: /opt/app/key.pem\n",
            "key.pem": "the key moved to the secrets manager\n",
        },
    )
    top = build(top_repo / "image.yaml", home).digest

    rules = by_id(run_check(home, top))

    [key] = rules["IMT-BL-006"]["evidence"]
    assert key["path"] == "/opt/app/key.pem" and key["layer"] == 0 and key["shadowed"] is True
    assert rules["IMT-BL-008"]["status"] == "pass"


def test_user_rules_run_after_the_baseline(clean_repo: Path, home: Path) -> None:
    build(clean_repo / "image.yaml", home, tag="clean:1")

    good = run_check(home, "clean:1", rules_dir=RULES_DIR / "good")
    user = by_id(good)["ACME-NET-001"]
    assert user["status"] == "pass" and user["source"] == "user"
    assert user["path"] == "no_network_tools.rego" and user["controls"] == ["ACME SEC-12"]
    assert [r["path"] for r in good.predicate["user_rules"]] == [
        "lib/paths.rego",
        "no_network_tools.rego",
    ]
    assert good.passed

    denied = run_check(home, "clean:1", rules_dir=RULES_DIR / "denying")
    rule = by_id(denied)["ACME-OWN-002"]
    assert rule["status"] == "fail" and rule["severity"] == "high"
    assert {e["path"] for e in rule["evidence"]} == {"/opt/app/main.py", "/opt/app/run"}
    assert rule["evidence"][0]["message"] == "application file owned by root"
    assert not denied.passed
    assert baseline_outcome(denied.predicate).failed == ["ACME-OWN-002 (high)"]

    relaxed = run_check(home, "clean:1", rules_dir=RULES_DIR / "denying", fail_on=Severity.CRITICAL)
    assert relaxed.passed and relaxed.predicate["fail_on"] == "critical"
    assert len(events(home)) == 3


def _store_state(home: Path) -> tuple[int, bytes]:
    ledger = open_ledger(home)
    try:
        size = ledger.head().size
    finally:
        ledger.close()
    return size, (home / "store" / "index.json").read_bytes()


@pytest.mark.parametrize(
    ("folder", "fragment"),
    [
        ("syntax", "broken.rego"),
        ("v0", "deny must be a set"),
        ("runtime", "evaluation failed"),
        ("nometa", "no `metadata"),
    ],
)
def test_bad_rule_files_change_nothing(
    clean_repo: Path, home: Path, folder: str, fragment: str
) -> None:
    from immutrail.baseline.errors import RuleFileError

    build(clean_repo / "image.yaml", home, tag="clean:1")
    before = _store_state(home)

    with pytest.raises(RuleFileError) as caught:
        run_check(home, "clean:1", rules_dir=RULES_DIR / folder)

    assert fragment in caught.value.diagnostics()
    assert caught.value.path.endswith(".rego")
    assert _store_state(home) == before
