"""`immutrail drift check` and `drift watch` on the real Docker engine: exec sessions (from the
live event stream within two seconds), shells and an SSH-like server in a container, containers
recreated or started behind immutrail's back, runtime rules: found with evidence and healed by
replacement."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest

from artifacts.services.dockerd import Engine
from deploy.conftest import free_port
from deploy.test_admission import PERMISSIVE, cli
from deploy.test_deploy_docker import SERVE, web_image
from deploy.test_docker_driver import engine  # noqa: F401
from immutrail.artifacts.store import Store
from immutrail.deploy.endpoint import Endpoint, list_endpoints
from immutrail.drift.check import EVIDENCE_TYPE

from .watching import Watching, events, kinds, wait_event

pytestmark = [pytest.mark.timeout(300), pytest.mark.docker]


@pytest.fixture
def deployed(home: Path, tmp_path: Path, engine: Engine) -> Iterator[tuple[Any, list[str], str]]:
    client = docker.DockerClient(base_url=engine.host)
    for principal in ("ops", "rel"):
        cli(home, "keys", "generate", "--principal", principal, "--no-passphrase")
    policy = tmp_path / "policy.yaml"
    policy.write_text(PERMISSIVE)
    cli(home, "policy", "set", "prod", str(policy), "--principal", "ops")
    digest = web_image(home, tmp_path, "1")
    declaration = tmp_path / "web.yaml"
    declaration.write_text(
        f"replicas: 2\nruntime: docker\nport: {free_port()}\ncommand: {SERVE}\n"
        "env: {MODE: strict}\n"
    )
    cli(home, "env", "declare", "prod", "web", str(declaration))
    cli(home, "promote", digest, "--to", "prod")
    host = ["--docker-host", engine.host]
    cli(home, "deploy", "prod", *host)
    try:
        yield client, host, digest
    finally:
        for info in list_endpoints(home):
            Endpoint(home, info.environment, info.service).stop()
        for container in client.containers.list(all=True):
            container.remove(force=True, v=True)
        client.close()


def by_kind(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in report["findings"]:
        out.setdefault(finding["kind"], []).append(finding)
    return out


def test_clean_then_exec_recreate_and_stranger_are_found_and_healed(
    home: Path, deployed: tuple[Any, list[str], str]
) -> None:
    client, host, digest = deployed
    assert cli(home, "drift", "check", "prod", *host)["clean"]
    first, second = sorted(c.name for c in client.containers.list())

    # 1. Someone opens a shell in a running container.
    client.containers.get(first).exec_run(["/bin/busybox", "sh", "-c", "id"])
    # 2. Someone recreates a container with another environment, keeping the name and labels.
    old = client.containers.get(second)
    attrs = old.attrs
    old.remove(force=True)
    env = [e for e in attrs["Config"]["Env"] if not e.startswith("MODE=")] + ["MODE=debug"]
    client.containers.run(
        attrs["Image"],
        command=attrs["Config"]["Cmd"],
        entrypoint=attrs["Config"]["Entrypoint"],
        environment=env,
        labels=attrs["Config"]["Labels"],
        name=second,
        network_mode="host",
        read_only=True,
        detach=True,
    )
    # 3. A container of an image immutrail does not know, wearing immutrail's labels.
    stranger = client.containers.run(
        attrs["Image"],
        command=["/bin/busybox", "sleep", "600"],
        entrypoint=[],
        labels={**attrs["Config"]["Labels"], "immutrail.digest": "sha256:" + "0" * 64},
        name="immutrail-prod-web-deadbeef",
        network_mode="host",
        detach=True,
    )
    del stranger

    report = cli(home, "drift", "check", "prod", *host, code=1)
    found = by_kind(report)
    [session] = found["exec-session"]
    assert session["instance"] == first and session["evidence"]["sessions"]
    config = [f for f in found["config"] if f["instance"] == second]
    assert config and config[0]["evidence"]["observed"]["MODE"] == "debug"
    assert config[0]["evidence"]["expected"]["MODE"] == "strict"
    lockdown = [f for f in found["lockdown"] if f["instance"] == second]
    assert lockdown and not lockdown[0]["evidence"]["settings"]["capabilities_dropped"]
    assert any(f["instance"] == "immutrail-prod-web-deadbeef" for f in found["unrecorded"])

    healed = cli(home, "drift", "check", "prod", "--remediate", *host)
    assert healed["after_remediation"]["clean"], healed["after_remediation"]["findings"]
    names = {c.name for c in client.containers.list(all=True)}
    assert not names & {first, second, "immutrail-prod-web-deadbeef"} and len(names) == 2
    for container in client.containers.list():
        assert container.labels["immutrail.digest"] == digest


DETECT_WITHIN_S = 2.0
RULES = """\
package immutrail.drift

alert contains {"msg": sprintf("a shell runs in %s", [input.instance.id]), "rule": "shell"} if {
    input.environment == "prod"
    some p in input.processes
    p.shell
}

alert contains {"msg": "runs as root", "rule": "root", "severity": "low"} if {
    input.instance.runtime == "docker"
    some p in input.processes
    p.from_entrypoint
    p.uid == 0
}
"""


def test_exec_shell_and_sshd_under_watch_are_found_fast_with_evidence(
    home: Path, tmp_path: Path, engine: Engine, deployed: tuple[Any, list[str], str]
) -> None:
    client, host, _ = deployed
    rules = tmp_path / "rules.rego"
    rules.write_text(RULES)
    cli(home, "drift", "rules", "set", "prod", str(rules))
    first, second = sorted(c.name for c in client.containers.list())

    with Watching(home, "prod", "--interval", "60", *host) as watching:
        clean = watching.wait_for(lambda r: r["source"] == "check")
        # no built-in finding on the clean containers; only what the rules say (busybox as root)
        assert kinds(clean["findings"]) == {"rule-alert"}, clean["findings"]
        assert events(home, "drift.detected") == []

        engine.docker("exec", first, "/bin/busybox", "sh", "-c", "id")
        returned = time.monotonic()
        event, seen = wait_event(
            home, "drift.detected", lambda e: e["source"] == "docker-events", 10, watching
        )
        assert seen - returned < DETECT_WITHIN_S, seen - returned
        assert event["subject"] == first
        [finding] = event["findings"]
        [session] = finding["evidence"]["sessions"]
        assert finding["kind"] == "exec-session" and finding["severity"] == "high"
        assert session["command"] == "/bin/busybox sh -c id"
        assert session["exec_id"] and session["tty"] is False and session["user"] == ""

        # A shell on a terminal, and a server named sshd, both left running in the container.
        shell = client.api.exec_create(first, ["/bin/busybox", "sh"], stdin=True, tty=True)
        client.api.exec_start(shell["Id"], detach=True, tty=True)
        port = free_port()
        serve = (
            "ln -s /bin/busybox /tmp/sshd && exec -a busybox /tmp/sshd httpd -f "
            f"-p 127.0.0.1:{port} -h /tmp"
        )
        sshd = client.api.exec_create(first, ["/bin/busybox", "sh", "-c", serve])
        client.api.exec_start(sshd["Id"], detach=True)

        found = watching.wait_for(
            lambda r: (
                r["source"] == "instance-check" and {"shell", "ssh-server"} <= kinds(r["findings"])
            )
        )
    by_kind = {f["kind"]: f for f in found["findings"]}
    shell_evidence = by_kind["shell"]["evidence"]
    assert shell_evidence["tty"] is not None and shell_evidence["tty"].startswith("pts/")
    assert shell_evidence["cmdline"] == ["/bin/busybox", "sh"]
    assert not shell_evidence["from_entrypoint"] and shell_evidence["uid"] == 0
    server = by_kind["ssh-server"]["evidence"]
    assert server["comm"] == "sshd" and server["cmdline"][:2] == ["busybox", "httpd"]
    assert server["listening"] == [{"protocol": "tcp", "address": "127.0.0.1", "port": port}]
    matched = [e for e in events(home, "drift.rule.matched") if e["subject"] == first]
    rules_fired = {o["rule"] for e in matched for o in e["outcomes"]}
    assert rules_fired == {"shell", "root"}
    assert matched[-1]["rules"]["digest"].startswith("sha256:")
    assert all(e["subject"] == first for e in events(home, "drift.detected"))

    # Replaced by the deployment engine; what was seen is kept with the image.
    healed = cli(home, "drift", "check", "prod", "--remediate", *host, code=1)
    assert healed["remediated"]["web"] == [first]
    after = healed["after_remediation"]["findings"]
    assert kinds(after) == {"rule-alert"}  # root: an alert needs a person, not a replacement
    names = {c.name for c in client.containers.list()}
    assert first not in names and second in names and len(names) == 2
    store = Store.for_home(home)
    kept = [
        json.loads(store.read_blob(e["blob"]))
        for e in events(home, "artifact.attached")
        if e["artifact_type"] == EVIDENCE_TYPE
    ]
    [evidence] = [k for k in kept if k["instance"] == first]
    assert {"exec-session", "shell", "ssh-server"} <= {f["kind"] for f in evidence["findings"]}
