"""Rendered fields compiled once: a binding may be a string template or a list/dict of them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from whenflow.dsl.templates import CompiledTemplate, Missing, compile_template


def compile_value(value: Any) -> Any:
    """Replace every string inside `value` by its CompiledTemplate; keep other scalars."""
    if isinstance(value, str):
        return compile_template(value)
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    return value


def render_value(compiled: Any, context: Mapping[str, Any]) -> Any:
    """Evaluate a compiled value; a single `{{ expr }}` yields the native value."""
    if isinstance(compiled, CompiledTemplate):
        return compiled.evaluate(context)
    if isinstance(compiled, list):
        return [render_value(v, context) for v in compiled]
    if isinstance(compiled, dict):
        return {k: render_value(v, context) for k, v in compiled.items()}
    return compiled


def contains_missing(value: Any) -> bool:
    if isinstance(value, Missing):
        return True
    if isinstance(value, list):
        return any(contains_missing(v) for v in value)
    if isinstance(value, dict):
        return any(contains_missing(v) for v in value.values())
    return False


def iter_strings(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Every string inside a YAML value with its path relative to the value."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from iter_strings(v, (*path, i))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from iter_strings(v, (*path, k))
