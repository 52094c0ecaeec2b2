"""What the CLI prints: strict JSON documents and plain-text tables.

JSON rules (docs/cli.md, "JSON output"): text is UTF-8 as itself (`"数据"`,
never `"\\u6570\\u636e"`); a number that JSON cannot hold (NaN, Infinity,
-Infinity) is printed as `null`, as JavaScript's `JSON.stringify` does, so
every document parses with a strict parser; values that are not JSON data
print as their text.

Tables never cut a cell: an execution id must stay whole and copyable at any
terminal width, so columns are padded plain text and a long line is left to
the terminal to wrap.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float replaced by None (recursively)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value


def json_text(value: Any, *, indent: int | None = None) -> str:
    """`value` as strict JSON: non-ASCII as itself, NaN/Infinity as null."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=str, indent=indent)
    except ValueError:  # a non-finite number somewhere: walk the value only then
        return json.dumps(
            finite(value), ensure_ascii=False, allow_nan=False, default=str, indent=indent
        )


def print_json(value: Any) -> None:
    """Print one JSON document on stdout (the whole of stdout under `--json`)."""
    print(json_text(value))


def table_text(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, separated by two spaces; no cell is cut."""
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in [headers, *rows]:
        cells = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    sys.stdout.write(table_text(headers, rows) + "\n")
