"""Service declarations parsed strictly, recorded, committed, replayed; desired-state rollbacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from artifacts.conftest import git
from immutrail.artifacts.store import Store
from immutrail.deploy.declaration import (
    config_files,
    declaration,
    declare,
    declared,
    parse_declaration,
)
from immutrail.deploy.errors import DeployInputError
from immutrail.deploy.runtime import RuntimeDriverError
from immutrail.ledger.home import open_ledger
from immutrail.policy.desired import desired_state, record_rollback
from immutrail.policy.errors import PolicyInputError

from .conftest import build_hello
from .test_admission import PERMISSIVE, cli


def write(tmp_path: Path, text: str, name: str = "svc.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_declaration_is_parsed_and_its_config_digest_is_its_identity(tmp_path: Path) -> None:
    (tmp_path / "app.toml").write_text("colour = 'blue'\n")
    path = write(
        tmp_path,
        "replicas: 3\nstrategy: rolling\nruntime: docker\nport: 8080\n"
        "env: {GREETING: hi, WORKERS: 4}\nfiles: {/etc/app/app.toml: app.toml}\n"
        "command: [python3, /opt/app/server.py]\nmax_lifetime: 24h\nhealth_timeout: 90s\n"
        "rolling: {max_surge: 2, max_unavailable: 1}\n"
        "canary: {steps: [5, 50, 100], step_seconds: 2.5, max_error_rate: 0.02}\n",
    )
    spec, files = parse_declaration(path, "prod", "hello")
    assert (spec.replicas, spec.strategy, spec.runtime, spec.port) == (3, "rolling", "docker", 8080)
    assert spec.env == {"GREETING": "hi", "WORKERS": "4"}
    assert files == {"/etc/app/app.toml": b"colour = 'blue'\n"}
    assert spec.files["/etc/app/app.toml"].startswith("sha256:")
    assert spec.max_lifetime_s == 86400 and spec.health_timeout_s == 90
    assert (spec.rolling.max_surge, spec.rolling.max_unavailable) == (2, 1)
    assert spec.canary.steps == (5, 50, 100) and spec.canary.max_error_rate == 0.02
    # Replicas and strategy are not identity; configuration is.
    same = parse_declaration(
        write(
            tmp_path,
            "port: 9090\nenv: {GREETING: hi, WORKERS: '4'}\nfiles: {/etc/app/app.toml: app.toml}\n"
            "command: [python3, /opt/app/server.py]\n",
            "same.yaml",
        ),
        "prod",
        "hello",
    )[0]
    assert same.config_digest == spec.config_digest
    other = parse_declaration(
        write(tmp_path, "port: 9090\nenv: {GREETING: yo}\n", "other.yaml"), "prod", "hello"
    )[0]
    assert other.config_digest != spec.config_digest


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("replicas: 2\n", "'port'"),
        ("port: 8080\nreplica: 2\n", "unknown key 'replica'"),
        ("port: 8080\nstrategy: yolo\n", "strategy must be one of"),
        ("port: 70000\n", "port must be an integer"),
        ("port: 8080\nenv: {PORT: '1'}\n", "is PORT"),
        ("port: 8080\nenv: {'A=B': x}\n", "names of variables"),
        ("port: 8080\nfiles: {etc/x: a}\n", "absolute, normalised"),
        ("port: 8080\nfiles: {/etc/../x: a}\n", "absolute, normalised"),
        ("port: 8080\nfiles: {/etc/x: missing}\n", "cannot read"),
        ("port: 8080\nmax_lifetime: forever\n", "a duration"),
        ("port: 8080\ncanary: {steps: [50, 10]}\n", "rising list"),
        ("port: 8080\ncanary: {steps: [10, 50]}\n", "ending with 100"),
        ("port: 8080\nrolling: {max_surge: 0, max_unavailable: 0}\n", ">= 1"),
        ("port: 8080\nport: 8081\n", "duplicate"),
        ("- a list\n", "a YAML mapping"),
    ],
)
def test_bad_declarations_are_refused_with_a_reason(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(DeployInputError, match=message):
        parse_declaration(write(tmp_path, text), "prod", "hello")


def test_bad_names_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "port: 8080\n")
    with pytest.raises(DeployInputError, match="environment name"):
        parse_declaration(path, "Prod", "hello")
    with pytest.raises(DeployInputError, match="service name"):
        parse_declaration(path, "prod", "hello_world")


def test_declare_records_commits_and_keeps_files(home: Path, tmp_path: Path) -> None:
    (tmp_path / "app.toml").write_text("a = 1\n")
    path = write(tmp_path, "port: 8080\nfiles: {/etc/app.toml: app.toml}\n")
    shown = cli(home, "env", "declare", "prod", "hello", str(path))
    assert shown["declaration"]["replicas"] == 1
    repository = home / "desired-state"
    document = json.loads((repository / "prod" / "hello.json").read_text())
    assert document["declaration"]["ledger_index"] == shown["ledger_index"]
    assert (repository / "prod" / "hello.files" / "etc" / "app.toml").read_text() == "a = 1\n"
    assert "config-digest: sha256:" in git(repository, "log", "-1", "--format=%B")
    with open_ledger(home) as ledger:
        item = declaration(ledger, "prod", "hello")
        assert config_files(home, item.spec) == {"/etc/app.toml": b"a = 1\n"}
        # A kept file that no longer matches its digest is an error, never used.
        kept = home / "config-files" / item.spec.files["/etc/app.toml"].replace(":", "-")
        kept.chmod(0o644)
        kept.write_text("a = 2\n")
        with pytest.raises(RuntimeDriverError, match="no longer matches"):
            config_files(home, item.spec)
        with pytest.raises(DeployInputError, match="not declared"):
            declaration(ledger, "prod", "other")
    listed = cli(home, "env", "show", "prod")["services"]
    assert [s["service"] for s in listed] == ["hello"] and listed[0]["desired"] is None


def test_redeclaring_replaces_and_both_are_in_history(home: Path, tmp_path: Path) -> None:
    with open_ledger(home) as ledger:
        for replicas in (1, 4):
            spec, files = parse_declaration(
                write(tmp_path, f"port: 8080\nreplicas: {replicas}\n"), "prod", "hello"
            )
            declare(home, ledger, "user:ops", spec, files)
        assert declared(ledger, "prod")["hello"].spec.replicas == 4
        assert declared(ledger, "staging") == {}
    assert git(home / "desired-state", "rev-list", "--count", "HEAD") == "2"


def test_rollback_goes_one_step_back_each_time_and_only_to_allowed_images(
    home: Path, tmp_path: Path
) -> None:
    cli(home, "keys", "generate", "--principal", "ops", "--no-passphrase")
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")
    v1, v2, v3 = (build_hello(home, tmp_path, v) for v in ("1", "2", "3"))
    store = Store.for_home(home)
    with open_ledger(home) as ledger:
        with pytest.raises(PolicyInputError, match="nothing has been promoted"):
            record_rollback(
                home, ledger, store, "prod", "hello", "ops", reason="r", automatic=False
            )
        for digest in (v1, v2, v3):
            cli(home, "promote", digest, "--to", "prod")
        state = desired_state(home, ledger, store, "prod", "hello")
        assert state is not None and (state.digest, state.previous) == (v3, v2)
        back = record_rollback(
            home, ledger, store, "prod", "hello", "user:ops", reason="bad", automatic=False
        )
        assert (back.digest, back.previous, back.rolled_back_by) == (v2, v1, "user:ops")
        again = record_rollback(
            home, ledger, store, "prod", "hello", "user:ops", reason="worse", automatic=False
        )
        assert (again.digest, again.previous) == (v1, None)
        with pytest.raises(PolicyInputError, match="no earlier image"):
            record_rollback(
                home, ledger, store, "prod", "hello", "ops", reason="r", automatic=False
            )
        # A new promotion after rollbacks: the history continues from what is desired.
        cli(home, "promote", v3, "--to", "prod")
        latest = desired_state(home, ledger, store, "prod", "hello")
        assert latest is not None and (latest.digest, latest.previous) == (v3, v1)
    log = git(home / "desired-state", "log", "--format=%an|%s").splitlines()
    assert log[1] == "user:ops|roll back prod/hello to hello:1"
