"""YAML text → plain Python data, plus a map from each value's path to its position.

PyYAML's composer gives nodes with marks; this module builds `dict`/`list`/
scalars from them itself so that every value keeps its 1-based line and column,
and every later error (schema, conversion, semantic validation) can point at
`file:line:col`.

Decisions:
- Only plain data: str, int, float, bool, None, list, dict. Any other tag
  (`!!python/...`, `!!binary`, `!!set`, custom `!tags`) is a located error.
  Timestamps (`2024-01-01`) stay strings: dates are inputs, not Python objects.
- Mapping keys are always strings, taken from the key's text, so `on:` or
  `200:` used as a key is the name `"on"` / `"200"`, never `True` / `200`.
  Values follow PyYAML's YAML 1.1 resolution (`yes` → True).
- A duplicate key in one mapping is an error at the second key. Merge keys
  (`<<: *base`) are supported; an explicit key overrides a merged one.
- Aliases are expanded; a recursive alias or an expansion past
  `MAX_VALUES` values is an error (no billion laughs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from whenflow.domain.definitions import NODE_ID_PATTERN
from whenflow.domain.errors import DefinitionError, DefinitionIssue, SourceLocation

YamlPath = tuple[str | int, ...]

MAX_VALUES = 1_000_000

_TAG = "tag:yaml.org,2002:"
_CONSTRUCTED_TAGS = frozenset({_TAG + "int", _TAG + "float", _TAG + "bool", _TAG + "null"})
_TEXT_TAGS = frozenset({_TAG + "str", _TAG + "timestamp"})
_KEY_TAGS = _TEXT_TAGS | _CONSTRUCTED_TAGS
_MERGE_TAG = _TAG + "merge"
_QUOTES = ('"', "'")


@dataclass(frozen=True, slots=True)
class ScalarPos:
    """Where a value starts (1-based) and, for `locate_in_value`, where it ends.

    `style` is the scalar style: `"` or `'` (quoted), `|` or `>` (block), None
    (plain scalar, or a list or mapping). The end is the position just past
    the value, as PyYAML reports it.
    """

    line: int
    column: int
    style: str | None = None
    end_line: int = 0
    end_column: int = 0


class SourceMap:
    """Positions of the values and keys of one YAML document."""

    def __init__(
        self,
        path: str,
        values: Mapping[YamlPath, ScalarPos | Node],
        keys: Mapping[YamlPath, ScalarPos | Node],
        lines: Sequence[str],
    ) -> None:
        """`values`/`keys` may hold composed YAML nodes: positions are only built
        when asked for (an error is being reported), not for every value loaded."""
        self.path = path
        self._values = values
        self._keys = keys
        self._lines = lines

    def position(self, path: YamlPath) -> ScalarPos | None:
        """The position of the value at `path`, or None if there is no such value."""
        return _as_pos(self._values.get(tuple(path)))

    def key_position(self, path: YamlPath) -> ScalarPos | None:
        return _as_pos(self._keys.get(tuple(path)))

    def locate(self, path: YamlPath) -> SourceLocation:
        """Location of the value at `path`, or of its nearest existing ancestor."""
        path = tuple(path)
        while path and path not in self._values:
            path = path[:-1]
        return self._location(self.position(path))

    def locate_key(self, path: YamlPath) -> SourceLocation:
        """Location of the mapping key that ends `path` (the value's, for a list item)."""
        pos = self.key_position(path)
        return self._location(pos) if pos else self.locate(path)

    def locate_in_value(self, path: YamlPath, offset: int) -> SourceLocation:
        """Location of character `offset` (0-based) of the string value at `path`.

        Exact for single-line plain and quoted scalars (escapes included) and
        for literal blocks (`|`); the value's start for folded or multi-line
        scalars, where the text no longer lines up with the source.
        """
        pos = self.position(path)
        if pos is None:
            return self.locate(path)
        if pos.style == "|":
            return self._in_literal_block(pos, offset)
        if pos.end_line != pos.line or pos.style == ">":
            return self._location(pos)
        if pos.style in _QUOTES:
            line = self._lines[pos.line - 1] if pos.line <= len(self._lines) else ""
            raw = line[pos.column : pos.end_column - 2]
            return SourceLocation(
                self.path, pos.line, pos.column + 1 + _raw_offset(raw, offset, pos.style)
            )
        return SourceLocation(self.path, pos.line, pos.column + offset)

    def _location(self, pos: ScalarPos | None) -> SourceLocation:
        if pos is None:
            return SourceLocation(self.path, 1, 1)
        return SourceLocation(self.path, pos.line, pos.column)

    def _in_literal_block(self, pos: ScalarPos, offset: int) -> SourceLocation:
        # Content starts on the line after the `|` header; every value line is
        # one source line, shifted right by the block's indentation.
        content = self._lines[pos.line : pos.end_line]
        indent = next((len(s) - len(s.lstrip(" ")) for s in content if s.strip()), 0)
        line_index, column = 0, offset
        for source_line in content:
            width = max(len(source_line) - indent, 0)
            if column <= width:
                break
            column -= width + 1
            line_index += 1
        return SourceLocation(self.path, pos.line + 1 + line_index, indent + column + 1)


def _raw_offset(raw: str, offset: int, quote: str) -> int:
    """Source offset, inside the quotes, of value character `offset` (escapes counted)."""
    i = 0
    for _ in range(offset):
        if i >= len(raw):
            return len(raw)
        if quote == "'" and raw.startswith("''", i):
            i += 2
        elif quote == '"' and raw[i] == "\\":
            i += {"x": 4, "u": 6, "U": 10}.get(raw[i + 1 : i + 2], 2)
        else:
            i += 1
    return i


def _as_pos(found: ScalarPos | Node | None) -> ScalarPos | None:
    return _pos(found) if isinstance(found, Node) else found


def _pos(node: Node) -> ScalarPos:
    style = (
        node.style if isinstance(node, ScalarNode) and node.style in ('"', "'", "|", ">") else None
    )
    return ScalarPos(
        line=node.start_mark.line + 1,
        column=node.start_mark.column + 1,
        style=style,
        end_line=node.end_mark.line + 1,
        end_column=node.end_mark.column + 1,
    )


class _Builder:
    """Turns one composed document into plain data, recording positions by path."""

    def __init__(self, path: str, constructor: SafeConstructor) -> None:
        self.path = path
        self.values: dict[YamlPath, Node] = {}
        self.keys: dict[YamlPath, Node] = {}
        self._constructor = constructor
        self._count = 0
        self._open: set[int] = set()

    def error(self, node: Node, message: str) -> DefinitionError:
        pos = _pos(node)
        return DefinitionError(
            DefinitionIssue(message, SourceLocation(self.path, pos.line, pos.column))
        )

    def build(self, node: Node, path: YamlPath) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise self.error(node, f"document expands to more than {MAX_VALUES} values")
        self.values.setdefault(path, node)
        if isinstance(node, ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            raise self.error(node, "recursive alias: a value contains itself")
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode) and node.tag == _TAG + "seq":
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode) and node.tag == _TAG + "map":
                return self._mapping(node, path)
            raise self.error(node, _tag_message(node.tag))
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: ScalarNode) -> Any:
        if node.tag in _TEXT_TAGS:
            return node.value
        if node.tag in _CONSTRUCTED_TAGS:
            try:
                return SafeConstructor.yaml_constructors[node.tag](self._constructor, node)
            except (ValueError, yaml.YAMLError) as exc:
                raise self.error(
                    node, f"{node.value!r} is not a valid {node.tag[len(_TAG) :]}"
                ) from exc
        raise self.error(node, _tag_message(node.tag))

    def _key(self, node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise self.error(node, "a mapping key must be a plain name, not a list or mapping")
        if node.tag not in _KEY_TAGS:
            raise self.error(node, _tag_message(node.tag))
        return str(node.value)

    def _mapping(self, node: MappingNode, path: YamlPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key in result:
                first = _pos(self.keys[(*path, key)])
                raise self.error(
                    key_node, f"duplicate key {key!r} (first defined at line {first.line})"
                )
            self.keys.setdefault((*path, key), key_node)
            result[key] = self.build(value_node, (*path, key))
        for merge in merges:
            sources = merge.value if isinstance(merge, SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, MappingNode):
                    raise self.error(source, "a merge key (<<) takes a mapping or a list of them")
                merged = self.build(source, path)
                for key, value in merged.items():
                    result.setdefault(key, value)
        return result


def _tag_message(tag: str) -> str:
    shown = "!!" + tag[len(_TAG) :] if tag.startswith(_TAG) else tag
    return (
        f"the tag {shown} is not allowed; a definition holds only strings, numbers, "
        "booleans, null, lists and mappings"
    )


def _syntax_error(exc: yaml.YAMLError, text: str, path: str) -> DefinitionError:
    """A PyYAML error as a located issue whose message is PyYAML's own plain words."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context:
            context = exc.context
            if (
                exc.context_mark is not None
                and exc.problem_mark is not None
                and exc.context_mark.line != exc.problem_mark.line
            ):
                context += f" started at line {exc.context_mark.line + 1}"
            message = f"{exc.problem} ({context})"
        location = SourceLocation(path, mark.line + 1, mark.column + 1) if mark else None
        return DefinitionError(DefinitionIssue(message, location))
    if isinstance(exc, yaml.reader.ReaderError):
        offset = exc.position
        line = text.count("\n", 0, offset) + 1
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        message = f"unacceptable character #x{char:04x}: {exc.reason}"
        return DefinitionError(DefinitionIssue(message, SourceLocation(path, line, column)))
    return DefinitionError(DefinitionIssue(f"invalid YAML: {exc}", SourceLocation(path, 1, 1)))


# libyaml's C scanner when PyYAML has it (10-50x faster on large pipelines); same nodes and marks.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml_documents(text: str, path: str) -> list[tuple[Any, SourceMap]]:
    """Parse every document (`---`) of `text`; each comes with its SourceMap.

    Raises:
        DefinitionError: a syntax error, a duplicate key, a non-plain tag, a
            recursive alias, located in `path`.
    """
    constructor = yaml.SafeLoader("")
    lines = text.splitlines()
    documents: list[tuple[Any, SourceMap]] = []
    try:
        for root in yaml.compose_all(text, Loader=_COMPOSER):
            builder = _Builder(path, constructor)
            data = builder.build(root, ())
            documents.append((data, SourceMap(path, builder.values, builder.keys, lines)))
    except yaml.YAMLError as exc:
        raise _syntax_error(_pure_python_error(text) or exc, text, path) from exc
    finally:
        constructor.dispose()
    return documents


def _pure_python_error(text: str) -> yaml.YAMLError | None:
    """The pure-Python parser's error for `text`: its messages and marks are the precise ones."""
    try:
        for _ in yaml.compose_all(text, Loader=yaml.SafeLoader):
            pass
    except yaml.YAMLError as exc:
        return exc
    return None


def field_name(path: YamlPath, node_ids: Sequence[object] = ()) -> str:
    """The dotted name of a YAML path, naming nodes by id (see the module docstring)."""
    if len(path) >= 3 and path[:2] == ("spec", "nodes") and isinstance(path[2], int):
        index = path[2]
        node_id = node_ids[index] if 0 <= index < len(node_ids) else None
        unique = isinstance(node_id, str) and list(node_ids).count(node_id) == 1
        if unique and NODE_ID_PATTERN.fullmatch(str(node_id)):
            head = f"nodes.{node_id}"
        else:
            head = f"nodes[{index}]"
        return head + _dotted(path[3:])
    return _dotted(path).lstrip(".")


def _dotted(parts: Sequence[str | int]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
