"""What a `shell` task writes to set its outputs: `$WF_OUTPUTS` and `$WF_OUTPUTS_JSON`.

`$WF_OUTPUTS` takes three kinds of entries, as GitHub Actions' `$GITHUB_OUTPUT`:

- `name=value` on one line: the value is natively typed when it is a JSON
  number, boolean, null, object or array, otherwise text. Only for values
  known to hold no newline: a newline in data would start another entry.
- `name<<DELIMITER`, the value's lines, then `DELIMITER` alone on a line: the
  value is the text in between, kept as text. With the per-attempt random
  `$WF_OUTPUT_DELIMITER`, no value can end the block early, so data cannot set
  another output: the safe way to write a value that comes from data.
- blank lines, ignored. A name set again replaces its earlier value.

`$WF_OUTPUTS_JSON` is a second, empty file: a task may write one JSON object
there (`jq -n --arg v "$X" '{name: $v}' > "$WF_OUTPUTS_JSON"`); each key is an
output with its JSON value. Both files may be used; a name set in both is an error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from whenflow.executors.errors import TaskOutputError

_HEREDOC = re.compile(r"^(?P<name>[^=<]+)<<(?P<delimiter>.+)$")


def parse_outputs(text: str) -> dict[str, Any]:
    """Outputs from the entries of `$WF_OUTPUTS` (see the module docstring)."""
    outputs: dict[str, Any] = {}
    lines = text.split("\n")
    number = 0
    while number < len(lines):
        line = lines[number].removesuffix("\r")
        number += 1
        if not line.strip():
            continue
        block = _HEREDOC.match(line)
        if block is not None and "=" not in line.partition("<<")[0]:
            name, delimiter = block["name"].strip(), block["delimiter"]
            value: list[str] = []
            while True:
                if number >= len(lines):
                    raise TaskOutputError(
                        f"$WF_OUTPUTS: the value of {name!r} (line {number - len(value)}) "
                        f"never ends: write {delimiter!r} alone on a line after it"
                    )
                current = lines[number]
                number += 1
                if current.removesuffix("\r") == delimiter:
                    break
                value.append(current)  # kept exactly, a carriage return included
            outputs[name] = "\n".join(value)
            continue
        name, sep, raw = line.partition("=")
        if not sep or not name.strip():
            raise TaskOutputError(
                f"line {number} of $WF_OUTPUTS is {line[:200]!r}; write `name=value` or "
                "`name<<$WF_OUTPUT_DELIMITER`, the value, then `$WF_OUTPUT_DELIMITER`"
            )
        outputs[name.strip()] = _output_value(raw)
    return outputs


def parse_json_outputs(text: str) -> dict[str, Any]:
    """Outputs from `$WF_OUTPUTS_JSON`: empty, or one JSON object."""
    if not text.strip():
        return {}
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        raise TaskOutputError(f"$WF_OUTPUTS_JSON is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TaskOutputError(
            f"$WF_OUTPUTS_JSON must hold one JSON object of outputs, not {type(value).__name__}"
        )
    return value


def merge_outputs(lines: dict[str, Any], from_json: dict[str, Any]) -> dict[str, Any]:
    """Both files' outputs; a name set in both is an error rather than a silent choice."""
    both = sorted(set(lines) & set(from_json))
    if both:
        raise TaskOutputError(
            f"output(s) {', '.join(both)} set in both $WF_OUTPUTS and $WF_OUTPUTS_JSON"
        )
    return {**lines, **from_json}


def _output_value(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except ValueError:
        return text
    return text if isinstance(value, str) else value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # NaN/Infinity stay text
