"""The parts on their own: config parsing, secret patterns, the predicate parser's strictness."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from immutrail.artifacts.builder import build
from immutrail.artifacts.statements import ledger_keys
from immutrail.artifacts.store import Store
from immutrail.baseline import baseline_outcome
from immutrail.baseline.checks import (
    CheckContext,
    apache_protocols,
    check_no_debug_logging,
    check_non_root,
    check_tls_minimum,
    debug_env,
)
from immutrail.baseline.errors import PredicateFormatError
from immutrail.baseline.image_input import ConfigFile, ImageInput, load_image_input
from immutrail.baseline.runner import evaluate
from immutrail.baseline.secrets import is_dotenv, scan_bytes, scan_env
from immutrail.ledger.home import open_ledger

from .conftest import AWS_KEY_ID, GITHUB_TOKEN


@pytest.fixture
def clean_image(clean_repo: Path, home: Path) -> ImageInput:
    digest = build(clean_repo / "image.yaml", home).digest
    ledger = open_ledger(home)
    try:
        return load_image_input(Store.for_home(home), digest, ledger_keys(ledger))
    finally:
        ledger.close()


def with_user(image: ImageInput, user: str) -> CheckContext:
    return CheckContext(replace(image, settings=replace(image.settings, user=user)), [])


@pytest.mark.parametrize(
    ("user", "fails"),
    [("", True), ("root", True), ("0:0", True), ("toor", True), ("app", False), ("1000", False)],
)
def test_non_root_resolves_names_through_passwd(
    clean_image: ImageInput, user: str, fails: bool
) -> None:
    assert bool(check_non_root(with_user(clean_image, user))) is fails


@pytest.mark.parametrize(
    ("words", "enabled"),
    [
        (["all", "-SSLv3"], {"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
        (["-all", "+TLSv1.2", "+TLSv1.3"], {"TLSv1.2", "TLSv1.3"}),
        (["TLSv1.2"], {"TLSv1.2"}),
        (["all", "-TLSv1", "-TLSv1.1"], {"TLSv1.2", "TLSv1.3"}),
    ],
)
def test_apache_protocol_semantics(words: list[str], enabled: set[str]) -> None:
    assert apache_protocols(words) == enabled


def _with_config(image: ImageInput, kind: str, path: str, content: str) -> CheckContext:
    item = ConfigFile(path, kind, 0, len(content), content, False)
    return CheckContext(replace(image, config_files=(item,)), [])


def test_commented_and_strong_settings_are_not_findings(clean_image: ImageInput) -> None:
    nginx = "# ssl_protocols TLSv1;\nssl_protocols TLSv1.2 TLSv1.3;\nerror_log x.log warn;\n"
    assert check_tls_minimum(_with_config(clean_image, "nginx", "etc/nginx/a.conf", nginx)) == []
    assert check_no_debug_logging(_with_config(clean_image, "nginx", "etc/n.conf", nginx)) == []
    weak = "proxy_ssl_protocols SSLv3 TLSv1.2;\n"
    [found] = check_tls_minimum(_with_config(clean_image, "nginx", "etc/nginx/b.conf", weak))
    assert found["line"] == 1 and found["detail"] == "enables SSLv3"
    xml = '<configuration>\n<!-- <root level="DEBUG"/> -->\n<root level="INFO"/>\n</configuration>'
    ctx = _with_config(clean_image, "logging", "app/logback.xml", xml)
    assert check_no_debug_logging(ctx) == []
    openssl = "[s]\nMinProtocol = TLSv1\n"
    [weak_min] = check_tls_minimum(_with_config(clean_image, "openssl", "etc/ssl/x.cnf", openssl))
    assert weak_min["detail"] == "allows TLSv1"


def test_debug_environment() -> None:
    env = {
        "LOG_LEVEL": "info",
        "APP_LOGLEVEL": "DEBUG",
        "RUST_LOG": "warn,hyper=trace",
        "DEBUG": "0",
    }
    assert [key for key, _ in debug_env(env)] == ["APP_LOGLEVEL", "RUST_LOG"]
    assert list(debug_env({"FLASK_DEBUG": "true"})) == [("FLASK_DEBUG", "true")]


def test_secret_patterns_and_placeholders() -> None:
    text = f"token: {GITHUB_TOKEN}\nid = {AWS_KEY_ID}\nnot a token: ghp_short\n".encode()
    found = [(kind, line) for kind, line, _, _ in scan_bytes(text, "app/config.yaml")]
    assert found == [("aws-access-key-id", 2), ("github-token", 1)]
    dotenv = (
        b"API_KEY=${API_KEY}\nPASSWORD=\nSECRET_KEY=<fill me>\nDB_PASSWORD=hunter22\nPORT=8080\n"
    )
    hits = [(kind, line, detail) for kind, line, _, detail in scan_bytes(dotenv, "srv/.env")]
    assert hits == [("dotenv-secret", 4, "key DB_PASSWORD")]
    assert list(scan_bytes(dotenv, "srv/.env.example")) == []  # a template, not a secret
    assert is_dotenv("a/.env.production") and not is_dotenv("a/.envrc")
    [env] = scan_env({"API_TOKEN": "abc123def", "PATH": "/usr/bin"})
    assert (
        env.kind == "env-secret"
        and env.detail == "key API_TOKEN"
        and "abc123def" not in env.fingerprint
    )


def test_user_rules_see_dotenv_keys_but_never_values(clean_image: ImageInput) -> None:
    item = ConfigFile("app/.env", "dotenv", 1, 20, "DB_PASSWORD=hunter22\n", False)
    document = replace(clean_image, config_files=(item,)).to_document()
    [entry] = document["config_files"]
    assert entry["keys"] == ["DB_PASSWORD"] and "content" not in entry
    assert "hunter22" not in str(document)


@pytest.fixture
def predicate(clean_image: ImageInput) -> dict[str, Any]:
    return evaluate(clean_image)


def test_outcome_of_a_real_predicate(predicate: dict[str, Any]) -> None:
    outcome = baseline_outcome(predicate)
    assert outcome.passed and outcome.failed == [] and str(outcome.fail_on) == "high"


def _broken(predicate: dict[str, Any], change: str) -> dict[str, Any]:
    bad = copy.deepcopy(predicate)
    if change == "passed-lies":
        bad["results"][0]["status"] = "fail"
        bad["results"][0]["evidence"] = [{"detail": "x"}]
    elif change == "no-results":
        bad["results"] = []
    elif change == "bad-severity":
        bad["results"][1]["severity"] = "severe"
    elif change == "duplicate":
        bad["results"].append(bad["results"][0])
    elif change == "bool-as-status":
        bad["results"][2]["status"] = True
    elif change == "missing-pack":
        del bad["rule_pack"]
    elif change == "passed-string":
        bad["passed"] = "true"
    return bad


@pytest.mark.parametrize(
    "change",
    [
        "passed-lies",
        "no-results",
        "bad-severity",
        "duplicate",
        "bool-as-status",
        "missing-pack",
        "passed-string",
    ],
)
def test_outcome_refuses_malformed_predicates(predicate: dict[str, Any], change: str) -> None:
    with pytest.raises(PredicateFormatError):
        baseline_outcome(_broken(predicate, change))
