"""YAML loading keeps every value's position, and refuses what is not plain data."""

from __future__ import annotations

from typing import Any

import pytest

from whenflow.domain.errors import DefinitionError, SourceLocation
from whenflow.dsl.yaml_source import ScalarPos, SourceMap, load_yaml_documents

TEXT = """\
name: demo
on: yes
when: 2024-01-01
count: 3
ratio: 0.5
empty:
nodes:
  - id: a
    cmd: [echo, "hi"]
  - id: b
plain: event:a.completed && x
single: 'it''s event:b'
double: "a\\tb event:c"
block: |
  first line
  second event:d
"""


def _load(text: str = TEXT) -> tuple[Any, SourceMap]:
    [(data, source)] = load_yaml_documents(text, "f.yaml")
    return data, source


def test_builds_plain_data_with_string_keys_and_dates_as_text() -> None:
    data, _ = _load()
    assert data == {
        "name": "demo",
        "on": True,
        "when": "2024-01-01",
        "count": 3,
        "ratio": 0.5,
        "empty": None,
        "nodes": [{"id": "a", "cmd": ["echo", "hi"]}, {"id": "b"}],
        "plain": "event:a.completed && x",
        "single": "it's event:b",
        "double": "a\tb event:c",
        "block": "first line\nsecond event:d\n",
    }


def test_locates_values_keys_and_nearest_ancestor() -> None:
    _, source = _load()
    assert source.locate(("nodes", 1, "id")) == SourceLocation("f.yaml", 10, 9)
    assert source.locate_key(("nodes", 0, "cmd")) == SourceLocation("f.yaml", 9, 5)
    assert source.locate(("nodes", 0, "cmd", 1)) == SourceLocation("f.yaml", 9, 17)
    # A missing path falls back to the nearest value that exists.
    assert source.locate(("nodes", 1, "task", "ref")) == SourceLocation("f.yaml", 10, 5)
    assert source.locate(()) == SourceLocation("f.yaml", 1, 1)
    assert source.position(("double",)) == ScalarPos(13, 9, '"', 13, 23)


@pytest.mark.parametrize(
    ("key", "needle", "expected"),
    [
        ("plain", "&&", SourceLocation("f.yaml", 11, 26)),
        ("single", "event", SourceLocation("f.yaml", 12, 16)),  # '' counts as two columns
        ("double", "event", SourceLocation("f.yaml", 13, 15)),  # \t counts as two columns
        ("block", "event", SourceLocation("f.yaml", 16, 10)),
    ],
)
def test_locate_in_value(key: str, needle: str, expected: SourceLocation) -> None:
    data, source = _load()
    assert isinstance(data, dict)
    offset = data[key].index(needle)
    assert source.locate_in_value((key,), offset) == expected
    line = TEXT.splitlines()[expected.line - 1]
    assert line[expected.column - 1 :].startswith(needle)


def test_folded_block_locates_at_value_start() -> None:
    _, source = _load("x: >\n  folded\n  text\n")
    assert source.locate_in_value(("x",), 8) == SourceLocation("f.yaml", 1, 4)


def test_one_entry_per_document() -> None:
    documents = load_yaml_documents("a: 1\n---\nb: 2\n", "f.yaml")
    assert [data for data, _ in documents] == [{"a": 1}, {"b": 2}]
    assert documents[1][1].locate(("b",)) == SourceLocation("f.yaml", 3, 4)


def test_merge_keys_with_explicit_override() -> None:
    data, source = _load("base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\n")
    assert data == {"base": {"x": 1, "y": 2}, "m": {"x": 1, "y": 3}}
    assert source.locate_key(("m", "y")) == SourceLocation("f.yaml", 4, 3)


@pytest.mark.parametrize(
    ("text", "where", "message"),
    [
        ("a: b: c\n", "f.yaml:1:5", "mapping values are not allowed here"),
        ("a: [1, 2\n", "f.yaml:2:1", "expected ',' or ']'"),
        ("a: 1\nb:\n  c: 1\n  c: 2\n", "f.yaml:4:3", "duplicate key 'c' (first defined at line 3)"),
        ("x: !!python/object/apply:os.system [ls]\n", "f.yaml:1:4", "tag !!python/object"),
        ("x: !custom 1\n", "f.yaml:1:4", "tag !custom is not allowed"),
        ("x: !!set {a, b}\n", "f.yaml:1:4", "tag !!set is not allowed"),
        ("x: &a [1, *a]\n", "f.yaml:1:4", "recursive alias"),
        ("? [a, b]\n: 1\n", "f.yaml:1:3", "a mapping key must be a plain name"),
        ("a:\n\t- b\n", "f.yaml:2:1", "found character '\\t' that cannot start any token"),
        ("x: !!int nope\n", "f.yaml:1:4", "'nope' is not a valid int"),
    ],
)
def test_errors_are_located(text: str, where: str, message: str) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_yaml_documents(text, "f.yaml")
    [issue] = caught.value.issues
    assert str(issue.location) == where
    assert message in issue.message
