"""The shell executor's pure parts: config checks, WF_OUTPUTS parsing, variable names."""

from __future__ import annotations

from typing import Any

import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.executors.errors import TaskOutputError
from whenflow.executors.shell import ShellExecutor, input_variable, parse_outputs


def test_outputs_file_lines_become_typed_outputs() -> None:
    text = (
        "count=3\n"
        "ratio=0.5\n"
        "ok=true\n"
        "nothing=null\n"
        'obj={"a": [1, 2]}\n'
        'arr=[1, "x"]\n'
        "name=hello world\n"
        'quoted="kept as written"\n'
        "nan=NaN\n"
        "expr={{ 7*7 }}\n"
        "eq=a=b\n"
        "\n"
        "empty=\r\n"
        "count=4\n"
    )
    assert parse_outputs(text) == {
        "count": 4,
        "ratio": 0.5,
        "ok": True,
        "nothing": None,
        "obj": {"a": [1, 2]},
        "arr": [1, "x"],
        "name": "hello world",
        "quoted": '"kept as written"',
        "nan": "NaN",
        "expr": "{{ 7*7 }}",
        "eq": "a=b",
        "empty": "",
    }


def test_a_line_without_equals_is_an_error() -> None:
    with pytest.raises(TaskOutputError, match=r"line 2 of \$WF_OUTPUTS is 'oops'"):
        parse_outputs("a=1\noops\n")


def test_input_variable_names() -> None:
    assert input_variable("start_date") == "WF_INPUT_START_DATE"
    assert input_variable("odd-name.x") == "WF_INPUT_ODD_NAME_X"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"command": ["echo", "hi"]}, []),
        ({"command": ["sleep", 1]}, []),
        ({"script": "echo hi", "env": {"A": "1", "B": 2}, "workdir": "/tmp"}, []),
        ({}, ["give exactly one of `command` (a list of arguments) or `script` (text)"]),
        (
            {"command": ["a"], "script": "b"},
            ["give exactly one of `command` (a list of arguments) or `script` (text)"],
        ),
        (
            {"command": "echo hi"},
            ["`command` must be a non-empty list of strings, e.g. [echo, hi]"],
        ),
        ({"command": []}, ["`command` must be a non-empty list of strings, e.g. [echo, hi]"]),
        (
            {"command": ["a", {"b": 1}]},
            ["`command` must be a non-empty list of strings, e.g. [echo, hi]"],
        ),
        ({"script": "  "}, ["`script` must be non-empty text"]),
        ({"script": "x", "env": ["A=1"]}, ["`env` must be a mapping of NAME: value"]),
        ({"script": "x", "env": {"A-B": "1"}}, ["env name 'A-B' is not a valid variable name"]),
        (
            {"script": "x", "env": {"WF_NODE_ID": "1"}},
            ["env name 'WF_NODE_ID': the WF_ prefix is reserved for whenflow"],
        ),
        (
            {"script": "x", "env": {"A": [1]}},
            ["env A: the value must be a string, number or boolean"],
        ),
        ({"script": "x", "workdir": 3}, ["`workdir` must be a path string"]),
        (
            {"script": "x", "shell": "zsh"},
            ["unknown field 'shell'; known fields: command, script, env, workdir"],
        ),
    ],
)
def test_check_messages(config: dict[str, Any], expected: list[str]) -> None:
    assert ShellExecutor().check(TaskSpec(type="shell", config=config)) == expected
