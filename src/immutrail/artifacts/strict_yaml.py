"""A strict YAML reader for definitions written by people: one document, plain data, line numbers.

PyYAML's ``safe_load`` keeps the last of two duplicate keys without a word and expands aliases
(a few lines can stand for gigabytes); both hide mistakes in a file that decides what is built.
This reader refuses duplicates, aliases, merge keys and non-string keys, and remembers the line of
every key and item so that errors can point at it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

MAX_DEPTH = 64

JsonPath = tuple[str | int, ...]


class StrictYamlError(ValueError):
    """The text is not YAML we accept; ``line`` is 1-based when known."""

    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(message)


@dataclass(frozen=True)
class Document:
    value: Any
    lines: Mapping[JsonPath, int]
    """Line (1-based) where the value at each path starts: ``("layers", 0, "source")``."""

    def line_of(self, path: JsonPath) -> int | None:
        """The line of ``path``, or of its nearest ancestor the document holds."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


class _Loader(yaml.SafeLoader):
    # PyYAML's composer recurses once per nesting level: counted here, the depth limit holds
    # before Python's recursion limit does (``[[[[…`` 100,000 deep was a RecursionError).
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark: yaml.Mark = self.current_event.start_mark  # check_event() just peeked it
            raise StrictYamlError(
                "aliases (*name) are not allowed; write the value out", mark.line + 1
            )
        if self._depth > MAX_DEPTH:  # the root is at depth 0
            mark = self.current_event.start_mark  # peeked by check_event() above
            raise StrictYamlError(f"nested deeper than {MAX_DEPTH} levels", mark.line + 1)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load(text: str) -> Document:
    """Parse one YAML document into JSON-like data and a map from paths to lines."""
    try:
        # The reader refuses NUL and other non-printable characters as it is made.
        loader = _Loader(text)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise StrictYamlError(
            f"not valid YAML: character U+{exc.character:04X} (at character {exc.position}) is "
            "not allowed: YAML text is printable Unicode",
            line,
        ) from exc
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            raise StrictYamlError(
                f"not valid YAML: {exc.problem or exc}", mark.line + 1 if mark else None
            ) from exc
        except yaml.YAMLError as exc:
            raise StrictYamlError(f"not valid YAML: {exc}") from exc
        lines: dict[JsonPath, int] = {}
        value = None if node is None else _convert(loader, node, (), lines)
        return Document(value, lines)
    finally:
        loader.dispose()


def _convert(loader: _Loader, node: yaml.Node, path: JsonPath, lines: dict[JsonPath, int]) -> Any:
    line = node.start_mark.line + 1
    lines.setdefault(path, line)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise StrictYamlError("merge keys (<<) are not allowed", key_line)
            key = _scalar(loader, key_node)
            if not isinstance(key, str):
                raise StrictYamlError(f"keys must be strings, not {key!r}", key_line)
            if key in out:
                raise StrictYamlError(f"duplicate key {key!r}", key_line)
            lines[(*path, key)] = key_line
            out[key] = _convert(loader, value_node, (*path, key), lines)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _convert(loader, item, (*path, index), lines) for index, item in enumerate(node.value)
        ]
    return _scalar(loader, node)


def _scalar(loader: _Loader, node: yaml.Node) -> Any:
    if not isinstance(node, yaml.ScalarNode):
        raise StrictYamlError("keys must be plain strings", node.start_mark.line + 1)
    try:
        return loader.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise StrictYamlError(
            f"unsupported value (tag {node.tag}): {exc}", node.start_mark.line + 1
        ) from exc
