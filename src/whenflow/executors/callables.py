"""Finding, calling and reading back the Python function a `python` task names.

Shared by the in-process path (`python.py`) and the isolated child
(`python_child.py`), so both apply the same rules: a callable is written
`package.module:function` (the attribute part may be dotted, `module:Class.method`),
it is imported by module name with the current `sys.path`, inputs are passed
as keyword arguments, a parameter named `ctx` receives the TaskContext, and
the return value must be a dict of outputs unless `@whenflow.task` declared a
single `result` output.
"""

from __future__ import annotations

import importlib
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from whenflow.domain.definitions import ParamSpec, TaskSignature
from whenflow.executors.errors import CallableNotFound, InvalidTaskConfig, TaskOutputError
from whenflow.executors.task_decorator import (
    CONTEXT_PARAMETER,
    definition_of,
    returns_single_value,
)

_DOTTED = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")

_prepared: dict[str, PreparedCallable] = {}
_prepared_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class PreparedCallable:
    """A resolved callable plus what its signature says about calling it."""

    spec: str
    fn: Callable[..., Any]
    is_async: bool
    wants_context: bool
    parameters: frozenset[str]
    required: frozenset[str]
    accepts_any_keyword: bool
    returns_value: bool
    signature: TaskSignature | None
    """What load-time checks know of its inputs: declared, names only, or nothing."""

    def arguments(self, inputs: Mapping[str, Any], ctx: object) -> dict[str, Any]:
        """Keyword arguments for one call; raises InvalidTaskConfig on a binding mismatch."""
        if self.wants_context and CONTEXT_PARAMETER in inputs:
            raise InvalidTaskConfig(
                "python",
                f"callable {self.spec!r}: an input is named {CONTEXT_PARAMETER!r}, which is "
                "reserved for the task context; rename the binding",
            )
        unknown = sorted(set(inputs) - self.parameters)
        if unknown and not self.accepts_any_keyword:
            raise InvalidTaskConfig(
                "python",
                f"callable {self.spec!r} has no parameter {unknown[0]!r}; remove that input "
                "binding or add the parameter to the function",
            )
        missing = sorted(self.required - set(inputs))
        if missing:
            names = ", ".join(repr(m) for m in missing)
            raise InvalidTaskConfig(
                "python",
                f"callable {self.spec!r} needs input {names} but the node does not bind it; "
                "add it to inputBindings or give the parameter a default",
            )
        arguments = dict(inputs)
        if self.wants_context:
            arguments[CONTEXT_PARAMETER] = ctx
        return arguments

    def outputs(self, value: Any) -> dict[str, Any]:
        """The outputs a return value stands for; raises TaskOutputError if it stands for none."""
        if value is None:
            return {}
        if self.returns_value:
            return {"result": value}
        if isinstance(value, Mapping):
            for key in value:
                if not isinstance(key, str):
                    raise TaskOutputError(
                        f"callable {self.spec!r} returned a dict with the key {key!r}; "
                        "output names must be strings"
                    )
            return dict(value)
        raise TaskOutputError(
            f"callable {self.spec!r} returned {type(value).__name__}, not a dict of outputs; "
            "return e.g. {'result': value}, or decorate it with @whenflow.task and a return "
            "annotation such as `-> int` to store the value as output 'result'"
        )


def parse_callable_spec(spec: object) -> tuple[str, str]:
    """Split `package.module:attr.path`; raises CallableNotFound naming the expected form."""
    text = spec if isinstance(spec, str) else repr(spec)
    module, sep, attribute = text.partition(":")
    if not isinstance(spec, str) or not sep or not _DOTTED.match(module):
        raise CallableNotFound(text, "write it as 'package.module:function' (module, colon, name)")
    if not _DOTTED.match(attribute):
        raise CallableNotFound(text, f"{attribute!r} after the colon is not a Python name")
    return module, attribute


def resolve_callable(spec: str) -> Callable[..., Any]:
    """Import the callable `package.module:function`; cached after the first success.

    Raises CallableNotFound with the reason (bad form, module missing or failing to
    import, attribute missing, not callable).
    """
    return prepare_callable(spec).fn


def signature_of(fn: object) -> TaskSignature | None:
    """The declared signature of an `@whenflow.task` function; None for any other callable."""
    definition = definition_of(fn)
    return definition.task.signature if definition is not None else None


def parameters_signature(fn: object) -> TaskSignature | None:
    """A names-only signature of a plain function, so load-time checks catch bad bindings.

    Every parameter but `ctx` is an input of type `any` (required when it has
    no default); outputs are not declared. None when the function takes
    `**kwargs` (it accepts any name) or cannot be inspected.
    """
    try:
        params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    inputs: dict[str, ParamSpec] = {}
    for name, param in params.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            return None
        if name == "ctx" or param.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.POSITIONAL_ONLY,
        ):
            continue
        inputs[name] = ParamSpec(required=param.default is inspect.Parameter.empty)
    return TaskSignature(inputs=inputs, outputs={})


def cached_callable(spec: str) -> PreparedCallable | None:
    """The prepared callable if `spec` was resolved before; never imports anything."""
    return _prepared.get(spec)


def prepare_callable(spec: str) -> PreparedCallable:
    """Resolve `spec` and inspect its signature once; cached per spec string."""
    cached = cached_callable(spec)
    if cached is not None:
        return cached
    fn = _import_callable(spec)
    prepared = _inspect(spec, fn)
    with _prepared_lock:
        return _prepared.setdefault(spec, prepared)


def _import_callable(spec: str) -> Callable[..., Any]:
    module_name, attribute = parse_callable_spec(spec)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise CallableNotFound(
                spec,
                f"no module named {exc.name!r} on sys.path; run whenflow from the project "
                "directory or add the module's folder to PYTHONPATH",
            ) from exc
        raise CallableNotFound(
            spec, f"importing {module_name!r} failed: ModuleNotFoundError: {exc}"
        ) from exc
    except Exception as exc:  # the module's own code raised while importing
        raise CallableNotFound(
            spec, f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise CallableNotFound(
                spec, f"module {module_name!r} has no attribute {attribute!r}"
            ) from None
    if not callable(target):
        raise CallableNotFound(
            spec, f"{attribute!r} is a {type(target).__name__}, not something callable"
        )
    return target  # type: ignore[no-any-return]


def _inspect(spec: str, fn: Callable[..., Any]) -> PreparedCallable:
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with `async def __call__`
    )
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature: pass everything
        return PreparedCallable(
            spec,
            fn,
            is_async,
            False,
            frozenset(),
            frozenset(),
            True,
            returns_single_value(fn),
            signature_of(fn),
        )
    keyword_kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = {p.name: p for p in params if p.kind in keyword_kinds}
    wants_context = CONTEXT_PARAMETER in named
    named.pop(CONTEXT_PARAMETER, None)
    return PreparedCallable(
        spec=spec,
        fn=fn,
        is_async=is_async,
        wants_context=wants_context,
        parameters=frozenset(named),
        required=frozenset(n for n, p in named.items() if p.default is inspect.Parameter.empty),
        accepts_any_keyword=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params),
        returns_value=returns_single_value(fn),
        signature=signature_of(fn) or parameters_signature(fn),
    )
