"""Durations as written in definitions: `500ms`, `2s`, `10m`, `1h`, `1d`, or a number of seconds."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: str | float | int) -> float:
    """Return seconds; raise ValueError with the accepted forms on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is >= 0")
        return float(value)
    text = value.strip().replace(" ", "")
    if not text:
        raise ValueError("empty duration")
    pos = 0
    total = 0.0
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ValueError(
            f"{value!r} is not a duration; "
            "write e.g. 500ms, 2s, 10m, 1h30m, 1d or a number of seconds"
        )
    return total


def format_duration(seconds: float) -> str:
    """Seconds as the shortest duration text `parse_duration` reads back: 90 → "1m30s"."""
    if seconds < 1 and seconds != 0:
        return f"{seconds * 1000:g}ms"
    parts = []
    rest = seconds
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        count = int(rest // size)
        if count:
            parts.append(f"{count}{unit}")
            rest -= count * size
    if rest or not parts:
        parts.append(f"{round(rest, 3):g}s")
    return "".join(parts)
