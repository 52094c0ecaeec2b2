"""Checking and coercing values against declared parameter types (DESIGN.md §2)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from whenflow.domain.definitions import ParamSpec
from whenflow.domain.errors import InputError


def type_name(value: Any) -> str:
    """The whenflow type name of a Python value, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    return type(value).__name__


def fits(value: Any, declared: str) -> bool:
    """Whether `value` has the declared type (`integer` fits `number`, a path fits `file`)."""
    actual = type_name(value)
    if declared == "any":
        return True
    if declared == "number":
        return actual in ("integer", "number")
    if declared == "file":
        return actual == "string" or type(value).__name__ in ("PosixPath", "WindowsPath", "Path")
    return actual == declared


def coerce_input(name: str, raw: Any, spec: ParamSpec) -> Any:
    """Turn a raw input (text from `-i k=v`, any value from a file) into the declared type.

    One rule for every source: text is parsed into a number, boolean, object
    or array input; a number or boolean given to a `string` input becomes its
    text (`456` → `"456"`, `true` → `"true"`), as `-i` would have given it.
    Raises InputError saying which type was expected.
    """
    if fits(raw, spec.type):
        return raw
    if spec.type == "string" and isinstance(raw, bool | int | float):
        return json.dumps(raw) if isinstance(raw, bool) else str(raw)
    if isinstance(raw, str):
        text = raw.strip()
        try:
            if spec.type == "integer":
                return int(text)
            if spec.type == "number":
                return float(text) if any(c in text for c in ".eE") else int(text)
            if spec.type == "boolean" and text.lower() in ("true", "false", "1", "0", "yes", "no"):
                return text.lower() in ("true", "1", "yes")
            if spec.type in ("object", "array"):
                value = json.loads(text)
                if fits(value, spec.type):
                    return value
        except ValueError:
            pass
    raise InputError(name, f"expected {spec.type}, got {type_name(raw)} {raw!r}")


def resolve_inputs(declared: Mapping[str, ParamSpec], given: Mapping[str, Any]) -> dict[str, Any]:
    """Validate execution inputs: unknown names, missing required ones, types; apply defaults."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(sorted(declared)) or "none"
        raise InputError(unknown[0], f"the pipeline declares no such input (declared: {known})")
    resolved: dict[str, Any] = {}
    for name, spec in declared.items():
        if name in given:
            resolved[name] = coerce_input(name, given[name], spec)
        elif spec.default is not None:
            resolved[name] = spec.default
        elif spec.required:
            raise InputError(name, f"is required ({spec.type}); pass it with -i {name}=...")
    return resolved
