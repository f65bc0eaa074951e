"""Runtime rules: refused when bad (nothing recorded), kept in the ledger, their alert and
replace outcomes recorded on real local instances, and only ``replace`` healed by replacement."""

from __future__ import annotations

from pathlib import Path

from deploy.test_admission import cli
from deploy.test_deploy_e2e import Env

from .test_drift_check import env  # noqa: F401  # a deployed local prod, two replicas
from .watching import events, kinds

RULES = """\
package immutrail.drift

# every instance of this test runs as the user running the suite
alert contains {"msg": sprintf("%s runs as uid %d", [input.instance.id, p.uid]), "rule": "uid"} if {
    some p in input.processes
    p.from_entrypoint
}

replace contains {"msg": "configuration differs", "rule": "config", "severity": "critical"} if {
    some f in input.findings
    f.kind == "config"
}
"""

BAD = {
    "syntax.rego": b"package immutrail.drift\nalert contains msg if {\n",
    "package.rego": b"package immutrail.policy\ndeny contains 1 if { true }\n",
    "v0.rego": b'package immutrail.drift\nalert[msg] { msg := "x" }\n',
    "neither.rego": b"package immutrail.drift\nallow := true\n",
    "severity.rego": (
        b'package immutrail.drift\nalert contains {"msg": "x", "severity": "urgent"} if {'
        b"\n  some p in input.processes\n  p.shell\n}\n"
    ),
    "shape.rego": b"package immutrail.drift\nreplace contains 42 if { true }\n",
    "binary.rego": b"package immutrail.drift\n\xff\xfe\n",
    "huge.rego": b"package immutrail.drift\n" + b"# padding\n" * 4000,
}


def test_bad_rules_are_refused_and_nothing_is_recorded(home: Path, tmp_path: Path) -> None:
    for name, data in sorted(BAD.items()):
        path = tmp_path / name
        path.write_bytes(data)
        cli(home, "drift", "rules", "set", "prod", str(path), code=2)
    cli(home, "drift", "rules", "set", "prod", str(tmp_path / "missing.rego"), code=2)
    assert cli(home, "drift", "rules", "show", "prod")["rules"] is None
    assert events(home, "drift.rules.changed") == []


def test_rules_are_set_shown_and_cleared_through_the_ledger(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "prod.rego"
    path.write_text(RULES)
    cli(home, "drift", "rules", "set", "Not An Env", str(path), code=2)
    made = cli(home, "drift", "rules", "set", "prod", str(path))["rules"]
    shown = cli(home, "drift", "rules", "show", "prod")["rules"]
    assert shown["source"] == RULES and shown["digest"] == made["digest"]
    assert shown["name"] == "prod.rego" and shown["ledger_index"] == made["ledger_index"]
    assert cli(home, "drift", "rules", "show", "staging")["rules"] is None
    cli(home, "drift", "rules", "clear", "prod")
    assert cli(home, "drift", "rules", "show", "prod")["rules"] is None
    [first, cleared] = events(home, "drift.rules.changed")
    assert first["digest"] == made["digest"] and first["source"] == RULES
    assert cleared["digest"] is None


def test_alert_and_replace_outcomes_are_recorded_and_only_replace_is_healed(
    env: Env, tmp_path: Path
) -> None:
    rules = tmp_path / "prod.rego"
    rules.write_text(RULES)
    cli(env.home, "drift", "rules", "set", "prod", str(rules))
    victim, other = env.instances()
    # the record of what was started is edited: the check sees another configuration
    record = env.home / "runtime" / "local" / victim.id / "instance.json"
    record.write_text(record.read_text().replace('"GREETING": "hi"', '"GREETING": "bye"'))

    report = cli(env.home, "drift", "check", "prod", code=1)
    assert report["rules"].startswith("sha256:")
    found: dict[str, set[str]] = {}
    for finding in report["findings"]:
        found.setdefault(finding["instance"], set()).add(finding["kind"])
    assert found[victim.id] == {"config", "rule-alert", "rule-replace"}
    assert found[other.id] == {"rule-alert"}
    [replace] = [f for f in report["findings"] if f["kind"] == "rule-replace"]
    assert replace["severity"] == "critical" and "config" in replace["control"]
    assert replace["evidence"]["rule"] == "config" and replace["message"] == "configuration differs"
    matched = {e["subject"]: e for e in events(env.home, "drift.rule.matched")}
    assert {o["outcome"] for o in matched[victim.id]["outcomes"]} == {"alert", "replace"}
    assert [o["outcome"] for o in matched[other.id]["outcomes"]] == ["alert"]
    assert matched[other.id]["rules"]["name"] == "prod.rego"
    # drift.detected carries the built-in findings; the rules' are in drift.rule.matched
    detected = [e for e in events(env.home, "drift.detected") if e["subject"] == victim.id]
    assert kinds(detected[-1]["findings"]) == {"config"}

    healed = cli(env.home, "drift", "check", "prod", "--remediate", code=1)
    assert healed["remediated"]["hello"] == [victim.id]
    running = {i.id for i in env.instances()}
    assert other.id in running and victim.id not in running  # an alert asks for a person
    left = healed["after_remediation"]["findings"]
    assert kinds(left) == {"rule-alert"} and len(left) == 2
