"""The image definition: schema, strict YAML, and the semantic rules, each error naming file+key."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from immutrail.artifacts.definition import (
    Healthcheck,
    LayerSpec,
    load_definition,
    parse_definition,
    schema,
)
from immutrail.artifacts.errors import DefinitionError

from .conftest import DATA

ROOT = Path(__file__).parent.parent.parent
DEFS = DATA / "definitions"


def problems(text: str) -> list[str]:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(text.encode(), "image.yaml")
    assert caught.value.path == "image.yaml"
    assert "image.yaml" in caught.value.diagnostics()
    return caught.value.problems


def test_full_example_loads_every_key() -> None:
    definition = load_definition(DEFS / "full.yaml")
    assert definition.base == "scratch" and definition.platform == "linux/amd64"
    assert definition.layers == (
        LayerSpec("app", "/opt/app", None, None, ("*.pyc", "__pycache__", "tests/**")),
        LayerSpec("config/app.toml", "/etc/app/app.toml", 0o640, (1000, 1000), ()),
    )
    assert dict(definition.env) == {"PYTHONUNBUFFERED": "1", "APP_HOME": "/opt/app"}
    assert definition.entrypoint == ("/opt/app/bin/run",)
    assert definition.cmd == ("--port", "8080")
    assert (definition.user, definition.workdir) == ("1000:1000", "/opt/app")
    assert definition.ports == ("8080/tcp", "9090/tcp")
    assert definition.healthcheck == Healthcheck(
        ("CMD", "/opt/app/bin/run", "--check"), 30 * 10**9, 5 * 10**9, 60 * 10**9, 3
    )
    assert definition.privacy_relevant == ("/var/lib/app/customers", "env:DATABASE_URL")


def test_unknown_keys_are_named_with_their_line() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(DEFS / "unknown-keys.yaml")
    found = caught.value.problems
    assert len(found) == 2
    assert found[0].startswith("line 5: layers[0].permissions: unknown key 'permissions'")
    assert found[1].startswith("line 6: entrypont: unknown key 'entrypont'")
    assert str(DEFS / "unknown-keys.yaml") in caught.value.diagnostics()


def test_sources_may_not_escape_the_repository() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(DEFS / "escapes.yaml")
    text = "\n".join(caught.value.problems)
    assert "layers[0].source: '../outside' uses '..'" in text
    assert "layers[1].source: '/etc/passwd' is absolute" in text
    assert "layers[2].destination" in text
    assert "layers[3].destination: '/opt/app/../etc' must be absolute and normalized" in text
    assert "(write '/opt/etc')" in text and "(write '/opt/relative')" in text


def test_duplicate_destinations_are_refused() -> None:
    with pytest.raises(DefinitionError) as caught:
        load_definition(DEFS / "duplicates.yaml")
    assert caught.value.problems == [
        "line 6: layers[1].destination: /opt/app is already the destination of layers[0]"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("base: scratch\nbase: scratch\n", "line 2: duplicate key 'base'"),
        ("a: &x 1\nbase: *x\n", "aliases"),
        ("base: scratch\n<<: {env: {}}\n", "merge keys"),
        ("base: [unclosed\n", "not valid YAML"),
        ("- base\n", "must be a YAML mapping"),
        ("", "must be a YAML mapping"),
        ("base: !!python/object:os.system x\n", "unsupported value"),
    ],
)
def test_strict_yaml(text: str, expected: str) -> None:
    assert expected in "\n".join(problems(text))


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ("base: latest", "must be `scratch` or an image digest"),
        ("base: scratch\nlayers: [{source: a, destination: /a, mode: 0755}]", "YAML reads 0755"),
        ("base: scratch\nlayers: [{source: a, destination: /a, owner: root}]", "numeric"),
        ("base: scratch\nlayers: [{source: a, destination: /a}]\nenv: {PORT: 8080}", "quote it"),
        ("base: scratch\nlayers: [{source: a, destination: /a}]\nports: ['99999']", "65535"),
        (
            "base: scratch\nlayers: [{source: a, destination: /a}]\nports: ['80', '80/tcp']",
            "repeats",
        ),
        ("base: scratch", "needs at least one layer"),
        ("base: scratch\nlayers: [{source: a, destination: /a, exclude: ['../x']}]", "'..'"),
        (
            "base: scratch\nlayers: [{source: a, destination: /a}]\nlabels: {dev.immutrail.x: y}",
            "immutrail's",
        ),
        (
            "base: scratch\nlayers: [{source: a, destination: /a}]\nhealthcheck: {test: [CMD]}",
            "needs a command",
        ),
        ("base: scratch\nlayers: [{source: a, destination: /a}]\nworkdir: /a/", "'/a'"),
        ("base: scratch\nlayers: [{source: a, destination: '//a'}]", "normalized"),
    ],
)
def test_semantic_and_schema_rules(snippet: str, expected: str) -> None:
    assert expected in "\n".join(problems(snippet))


def test_all_problems_are_reported_at_once() -> None:
    found = problems("base: nope\nfoo: 1\nlayers: [{source: a}]\n")
    assert len(found) == 3  # base, foo, and the missing destination


def test_sources_are_normalized() -> None:
    definition = parse_definition(
        b"base: scratch\nlayers: [{source: ./app/, destination: /a}, {source: ., destination: /}]",
        "x",
    )
    assert [layer.source for layer in definition.layers] == ["app", "."]


def test_oversized_and_binary_definitions(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    with pytest.raises(DefinitionError, match="larger than"):
        load_definition(big)
    with pytest.raises(DefinitionError, match="not UTF-8"):
        parse_definition(b"base: \xff", "x")
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definition(tmp_path / "missing.yaml")


def test_published_schema_is_the_shipped_one() -> None:
    """schemas/ is what editors and users read; it must be the file the code validates with."""
    published = json.loads((ROOT / "schemas" / "image-definition.schema.json").read_text())
    assert published == schema()
    jsonschema.Draft202012Validator.check_schema(published)
