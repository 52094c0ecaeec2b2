"""`@whenflow.task`: a plain Python function as a typed, versioned TaskDefinition.

The decorator reads the function's type hints once, builds a `TaskDefinition`
(DESIGN.md §2) whose task is `{type: python, callable: module:qualname}`, and
attaches it to the function as `__whenflow_task__`. The function itself is
returned unchanged, so it stays an ordinary function for unit tests and callers.

Type hints map to whenflow types: str→string, int→integer, float→number,
bool→boolean, dict/Mapping/TypedDict→object, list/tuple/Sequence/set→array,
pathlib.Path→file, Any or no hint→any. The return hint decides the outputs:
a TypedDict declares its fields; dict/Mapping/None (or no hint) declare no
outputs (the function returns a dict of outputs); any other type declares a
single output `result` and the returned value is stored under that name.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence, Set
from pathlib import PurePath
from typing import Any, Literal, TypeVar, overload

from whenflow.domain.definitions import (
    ParamSpec,
    ParamType,
    TaskDefinition,
    TaskSignature,
    TaskSpec,
)
from whenflow.domain.errors import DefinitionError, DefinitionIssue
from whenflow.domain.events import EVENT_NAME, RESERVED_NODE_EVENTS

F = TypeVar("F", bound=Callable[..., Any])

TASK_ATTRIBUTE = "__whenflow_task__"
"""Attribute holding the TaskDefinition on a decorated function."""

RETURNS_VALUE_ATTRIBUTE = "__whenflow_returns_value__"
"""Attribute set to True when the return value is stored as the single output `result`."""

CONTEXT_PARAMETER = "ctx"
"""A parameter with this name receives the TaskContext instead of an input."""

_SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:[-+][0-9A-Za-z.+-]+)?$")

# Used when hints cannot be evaluated (e.g. names imported under TYPE_CHECKING).
_HINTS_BY_NAME: dict[str, ParamType] = {
    "str": "string",
    "int": "integer",
    "float": "number",
    "bool": "boolean",
    "dict": "object",
    "Mapping": "object",
    "list": "array",
    "tuple": "array",
    "Sequence": "array",
    "Path": "file",
    "PurePath": "file",
}


@overload
def task(fn: F, /) -> F: ...


@overload
def task(
    *,
    name: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
    emits: Sequence[str] = (),
) -> Callable[[F], F]: ...


def task(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
    emits: Sequence[str] = (),
) -> F | Callable[[F], F]:
    """Declare a function as a whenflow task: `@whenflow.task` or `@whenflow.task(name=...)`.

    Args:
        fn: The function, when used without parentheses.
        name: The task's registered name; the function's name by default.
        version: A semantic version such as "1.2.0".
        description: Shown in `whenflow validate` and the UI; the docstring's first
            paragraph by default.
        emits: The custom events the function publishes with `ctx.emit(name)`; a
            trigger may only wait for declared ones, and emitting another fails the task.
    """

    def decorate(function: F) -> F:
        definition, returns_value = build_definition(
            function, name=name, version=version, description=description, emits=emits
        )
        setattr(function, TASK_ATTRIBUTE, definition)
        setattr(function, RETURNS_VALUE_ATTRIBUTE, returns_value)
        return function

    if fn is not None:
        return decorate(fn)
    return decorate


def definition_of(fn: object) -> TaskDefinition | None:
    """The TaskDefinition attached by `@whenflow.task`, or None for an ordinary callable."""
    definition = getattr(fn, TASK_ATTRIBUTE, None)
    return definition if isinstance(definition, TaskDefinition) else None


def returns_single_value(fn: object) -> bool:
    """Whether `fn`'s return value is stored as the single output `result`."""
    return definition_of(fn) is not None and getattr(fn, RETURNS_VALUE_ATTRIBUTE, False) is True


def build_definition(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    version: str = "0.1.0",
    description: str | None = None,
    emits: Sequence[str] = (),
) -> tuple[TaskDefinition, bool]:
    """The TaskDefinition of `fn`, and whether its return value becomes output `result`.

    Raises DefinitionError when the function cannot be called with inputs by keyword
    or the version is not semantic.
    """
    qualname = getattr(fn, "__qualname__", getattr(fn, "__name__", ""))
    task_name = name or getattr(fn, "__name__", "")
    if not task_name:
        _fail(qualname, "has no __name__; pass name= to @whenflow.task")
    if not _SEMVER.match(version):
        _fail(qualname, f"version {version!r} is not semantic; use e.g. '1.0.0'")
    if isinstance(emits, str):
        _fail(qualname, f"emits={emits!r} must be a list of event names, e.g. [{emits!r}]")
    for event in emits:
        if not isinstance(event, str) or not EVENT_NAME.fullmatch(event):
            _fail(qualname, f"emits: {event!r} is not an event name ([a-z_][a-z0-9_]*)")
        if event in RESERVED_NODE_EVENTS:
            _fail(qualname, f"emits: {event!r} is a lifecycle event whenflow publishes itself")

    hints = _resolved_hints(fn)
    docs = inspect.getdoc(fn) or ""
    arg_docs = _argument_docs(docs)
    inputs: dict[str, ParamSpec] = {}
    for param in inspect.signature(fn).parameters.values():
        if param.name == CONTEXT_PARAMETER:
            continue
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            _fail(qualname, f"parameter {param.name!r} is positional-only; inputs are keywords")
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        has_default = param.default is not inspect.Parameter.empty
        inputs[param.name] = ParamSpec(
            type=param_type(hints.get(param.name, Any)),
            required=not has_default,
            default=_json_default(param.default) if has_default else None,
            description=arg_docs.get(param.name, ""),
        )

    outputs, returns_value = _outputs_of(hints.get("return", inspect.Signature.empty))
    spec = TaskSpec(
        type="python",
        config={"callable": f"{fn.__module__}:{qualname}"},
        signature=TaskSignature(inputs=inputs, outputs=outputs, emits=tuple(dict.fromkeys(emits))),
    )
    summary = description if description is not None else docs.split("\n\n", 1)[0].strip()
    return TaskDefinition(name=task_name, version=version, task=spec, description=summary), (
        returns_value
    )


def param_type(hint: Any) -> ParamType:
    """The whenflow type of a Python type hint; "any" when it has no single JSON type."""
    if hint is Any or hint is inspect.Parameter.empty:
        return "any"
    if isinstance(hint, str):
        return _HINTS_BY_NAME.get(hint.strip(), "any")
    supertype = getattr(hint, "__supertype__", None)  # typing.NewType
    if supertype is not None:
        return param_type(supertype)
    origin = typing.get_origin(hint)
    if origin in (typing.Annotated, typing.Required, typing.NotRequired):
        return param_type(typing.get_args(hint)[0])
    if origin is typing.Union or origin is types.UnionType:
        kinds = {param_type(a) for a in typing.get_args(hint) if a is not type(None)}
        if kinds == {"integer", "number"}:
            return "number"
        return kinds.pop() if len(kinds) == 1 else "any"
    if origin is Literal:
        kinds = {param_type(type(value)) for value in typing.get_args(hint)}
        return kinds.pop() if len(kinds) == 1 else "any"
    if origin is not None:
        hint = origin
    if not isinstance(hint, type):
        return "any"
    return _class_type(hint)


def _class_type(cls: type) -> ParamType:
    if typing.is_typeddict(cls):
        return "object"
    # Order matters: bool is an int, str is a Sequence.
    checks: tuple[tuple[type | tuple[type, ...], ParamType], ...] = (
        (bool, "boolean"),
        (int, "integer"),
        (float, "number"),
        (str, "string"),
        ((bytes, bytearray), "any"),
        (PurePath, "file"),
        (Mapping, "object"),
        ((Sequence, Set), "array"),
    )
    for kind, name in checks:
        if issubclass(cls, kind):
            return name
    return "any"


def _outputs_of(hint: Any) -> tuple[dict[str, ParamSpec], bool]:
    if hint is inspect.Signature.empty or hint is None or hint is type(None):
        return {}, False
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) == 1:
            hint = members[0]
    if isinstance(hint, type) and typing.is_typeddict(hint):
        required_keys: frozenset[str] = getattr(hint, "__required_keys__", frozenset())
        return {
            key: ParamSpec(
                type=param_type(field), required=_field_required(key, field, required_keys)
            )
            for key, field in _resolved_hints(hint).items()
        }, False
    kind = param_type(hint)
    if kind == "object":
        return {}, False
    return {"result": ParamSpec(type=kind, required=not optional)}, True


def _field_required(key: str, hint: Any, required_keys: frozenset[str]) -> bool:
    # `__required_keys__` misses NotRequired[...] written as a string annotation
    # (`from __future__ import annotations`) before Python 3.12; the hint itself is exact.
    origin = typing.get_origin(hint)
    if origin is typing.NotRequired:
        return False
    return origin is typing.Required or key in required_keys


def _resolved_hints(obj: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(obj, include_extras=True)
    except Exception:  # unresolvable forward references: fall back to the raw text
        raw: Mapping[str, Any] = getattr(obj, "__annotations__", {}) or {}
        return {key: _raw_hint(value) for key, value in raw.items()}


def _raw_hint(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    parts = [p.strip() for p in value.split("|") if p.strip() not in ("None", "")]
    if not parts:
        return None
    return parts[0].split("[", 1)[0] if len(parts) == 1 else Any


def _json_default(value: Any) -> Any:
    if isinstance(value, PurePath):
        return str(value)
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return None
    return value


def _argument_docs(docstring: str) -> dict[str, str]:
    """Parameter descriptions from a Google-style `Args:` section."""
    found: dict[str, str] = {}
    in_args = False
    for line in docstring.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args and stripped and not line.startswith((" ", "\t")):
            break
        match = re.match(r"^\s+(\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line) if in_args else None
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _fail(qualname: str, message: str) -> typing.NoReturn:
    raise DefinitionError(DefinitionIssue(f"@whenflow.task {qualname}: {message}"))
