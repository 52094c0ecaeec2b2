"""The bounded Jinja sandbox: which filters and methods can grow a value, and the environment.

`make_env` builds the one `ImmutableSandboxedEnvironment` of whenflow (DESIGN.md
§10), with the bounds of `template_bounds` applied where the sandbox lets us
in: every intercepted operator (`call_binop`), every call of a method or
function (`call`), `str.format` (`wrap_str_format`) and every filter, each
wrapped by `bound_filter`. A filter or method whose result can be much larger
than its input has a size estimate here, checked before it runs.
"""

from __future__ import annotations

import itertools
import types
from collections.abc import Callable, Mapping
from functools import update_wrapper
from typing import Any

from jinja2 import Undefined
from jinja2.filters import make_attrgetter
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import _PassArg, pass_environment

from whenflow.dsl.template_bounds import (
    INTERNAL_FILTERS,
    MAX_BUILT_SIZE,
    MAX_INT_BITS,
    MAX_VALUE_SIZE,
    METHOD_NOT_DATA,
    BoundedFormatter,
    CallableValue,
    Counted,
    TemplateLimitExceeded,
    check_binop,
    check_deadline,
    check_printf,
    check_result,
    note_built,
    too_big,
    value_size,
)


def _text_len(value: Any) -> int:
    return len(value) if isinstance(value, str) else value_size(value)


def _replace_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    text, old, new = str(s), str(old), str(new)
    found = text.count(old) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(0, len(new) - len(old))


def _join_size(value: Any, d: Any = "", attribute: Any = None) -> int:
    check_result(value)
    items = len(value) if isinstance(value, list | tuple | dict | str) else 0
    return value_size(value) + items * len(str(d))


def _indent_size(s: Any, width: Any = 4, first: Any = False, blank: Any = False) -> int:
    text = str(s)
    pad = width if isinstance(width, int) else len(str(width))
    return len(text) + (text.count("\n") + 1) * max(pad, 0)


def _wordwrap_size(
    s: Any,
    width: Any = 79,
    break_long_words: Any = True,
    wrapstring: Any = None,
    break_on_hyphens: Any = True,
) -> int:
    text = str(s)
    step = width if isinstance(width, int) and width > 0 else 1
    lines = 2 * len(text) // step + text.count("\n") + 1
    return len(text) + lines * len(wrapstring if isinstance(wrapstring, str) else "\n")


def _tojson_size(value: Any, indent: Any = None) -> int:
    pad = indent if isinstance(indent, int) else len(str(indent or ""))
    return value_size(value) * (1 + max(pad, 0))


def _center_size(value: Any, width: Any = 80) -> int:
    return max(_text_len(value), width if isinstance(width, int) else 0)


def _urlize_size(value: Any, *args: Any, **kwargs: Any) -> int:
    text = str(value)
    extra = sum(len(str(v)) for v in (*args, *kwargs.values()) if isinstance(v, str))
    return len(text) * 3 + len(text.split()) * (64 + extra)


def _escape_size(value: Any) -> int:
    text = value if isinstance(value, str) else str(value)
    return len(text) + 5 * sum(text.count(c) for c in "&<>'\"")


def _urlencode_size(value: Any) -> int:
    if isinstance(value, str):
        return 3 * len(value.encode("utf-8", "surrogatepass"))
    return 3 * value_size(value)


def _format_size(value: Any, *args: Any, **kwargs: Any) -> int:
    check_printf(str(value), kwargs or args)
    return 0


def _round_size(value: Any, precision: Any = 0, method: Any = "common") -> int:
    # Python computes `10 ** abs(precision)` for an integer, or for 'ceil' and
    # 'floor', in one uninterruptible step: `5 | round(-10 ** 9)` froze the loop.
    if type(precision) is int and abs(precision) * 10 // 3 > MAX_INT_BITS:
        raise TemplateLimitExceeded(
            f"filter 'round': a precision of {precision:,} computes 10 ** {abs(precision):,}, "
            f"a number over the limit of {MAX_INT_BITS:,} bits (MAX_INT_BITS)"
        )
    return 0


# Filters whose result can be much larger than their input: an estimate of the
# result's size from the arguments, checked before the filter runs.
_FILTER_GROWTH: Mapping[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": _join_size,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "tojson": _tojson_size,
    "center": _center_size,
    "urlize": _urlize_size,
    "format": _format_size,
    "round": _round_size,
    "escape": _escape_size,
    "e": _escape_size,
    "forceescape": _escape_size,
    "urlencode": _urlencode_size,
    "list": lambda value: value_size(value),
    # Every slice is a new list: count each as 16 items, so `slice(10 ** 6)`
    # cannot make a million empty lists.
    "slice": lambda value, slices, fill_with=None: (
        (len(value) if isinstance(value, list | tuple | str) else 0) + 16 * slices
        if isinstance(slices, int)
        else 0
    ),
}

# Filters that copy or case-fold every item of their subject (`sort`'s key is
# `item.lower()`): the subject, counted deeply, is held to MAX_BUILT_SIZE first,
# so a list of a thousand references to one long text is not copied a thousand times.
_ITEM_COPYING_FILTERS = frozenset({"sort", "unique", "dictsort", "min", "max", "groupby"})

# Filters that turn their subject into text: a subject that is not text is
# held to MAX_VALUE_SIZE and must hold no callable, before `str()` runs on it.
_TEXT_FILTERS = frozenset(
    {
        "capitalize",
        "center",
        "e",
        "escape",
        "forceescape",
        "format",
        "indent",
        "lower",
        "pprint",
        "replace",
        "safe",
        "string",
        "striptags",
        "title",
        "trim",
        "truncate",
        "upper",
        "urlencode",
        "urlize",
        "wordcount",
        "wordwrap",
        "xmlattr",
    }
)

# Filters whose integer arguments are data, not sizes (`default(5000000)`); the
# generic "no integer argument over MAX_VALUE_SIZE" rule does not apply to them.
_DATA_ARGUMENT_FILTERS = frozenset(
    {
        "default",
        "d",
        "format",
        "sum",
        "int",
        "float",
        "round",
        "select",
        "reject",
        "selectattr",
        "rejectattr",
        "map",
        "replace",
        "groupby",
        "sort",
        "unique",
        "min",
        "max",
        "dictsort",
        "first",
        "last",
    }
)


def check_int_arguments(kind: str, name: str, args: Any, kwargs: Mapping[str, Any]) -> None:
    for arg in itertools.chain(args, kwargs.values()):
        if type(arg) is int and abs(arg) > MAX_VALUE_SIZE:
            raise TemplateLimitExceeded(
                f"{kind} {name}: the argument {arg:,} is over the size limit of {MAX_VALUE_SIZE:,}"
            )


def check_filter_arguments(name: str, args: Any) -> None:
    """The integer-argument rule for a filter, for the load-time check of constants."""
    if name not in _DATA_ARGUMENT_FILTERS:
        check_int_arguments("filter", repr(name), args, {})


def bound_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """`func` with the deadline, the integer-argument rule and its growth estimate."""
    skip = 0 if _PassArg.from_obj(func) is None else 1
    growth = _FILTER_GROWTH.get(name)
    check_ints = name not in _DATA_ARGUMENT_FILTERS
    to_text = name in _TEXT_FILTERS
    copies_items = name in _ITEM_COPYING_FILTERS

    def bounded(*args: Any, **kwargs: Any) -> Any:
        check_deadline()
        if to_text and len(args) > skip and type(args[skip]) is not str:
            check_result(args[skip])
        if copies_items and len(args) > skip:
            check_result(args[skip], MAX_BUILT_SIZE)
        if check_ints and (kwargs or len(args) > skip + 1):
            check_int_arguments("filter", repr(name), args[skip + 1 :], kwargs)
        if growth is not None:
            size = growth(*args[skip:], **kwargs)
            if size > MAX_VALUE_SIZE:
                raise too_big(f"filter {name!r}", size)
        result = func(*args, **kwargs)
        note_built(result)
        return result

    bounded.__name__ = getattr(func, "__name__", name)
    bounded.__doc__ = func.__doc__
    pass_arg = getattr(func, "jinja_pass_arg", None)
    if pass_arg is not None:
        bounded.jinja_pass_arg = pass_arg  # type: ignore[attr-defined]
    return bounded


@pass_environment
def bounded_sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    """Jinja's `sum`, in linear time for lists and tuples (Python's `sum` is quadratic there)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    items = list(iterable)
    kind = type(start)
    if kind is list or kind is tuple:
        size = value_size(start) + value_size(items)
        if size > MAX_VALUE_SIZE:
            raise too_big("filter 'sum'", size)
        for item in items:
            if type(item) is not kind:
                raise TypeError(
                    f"can only add {kind.__name__} to {kind.__name__}, not {type(item).__name__}"
                )
        return kind(itertools.chain(start, *items))
    return sum(items, start)


def _str_join_size(sep: str, iterable: Any) -> int:
    check_result(iterable)
    items = len(iterable) if isinstance(iterable, list | tuple | dict | str) else 0
    return value_size(iterable) + items * len(sep)


def _expandtabs_size(s: str, tabsize: Any = 8) -> int:
    return len(s) + s.count("\t") * (tabsize if isinstance(tabsize, int) else 8)


def _translate_size(s: str, table: Any) -> int:
    widest = 1
    if isinstance(table, dict):
        widest = max((len(v) for v in table.values() if isinstance(v, str)), default=1)
    return len(s) * max(widest, 1)


def _width_size(s: str, width: Any = 0, *args: Any) -> int:
    return max(len(s), width if isinstance(width, int) else 0)


# Methods of `str` whose result can be much larger than the string.
_STR_METHOD_GROWTH: Mapping[str, Callable[..., int]] = {
    "replace": _replace_size,
    "join": _str_join_size,
    "expandtabs": _expandtabs_size,
    "translate": _translate_size,
    "center": _width_size,
    "ljust": _width_size,
    "rjust": _width_size,
    "zfill": _width_size,
}


def check_call(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Before a method call from a template: the deadline, and the size rules for `str`.

    `bytes` (`'x'.encode()`) has the same growing methods and is measured as
    text; an `int`'s only integer argument is a size (`(0).to_bytes(10 ** 9)`).
    """
    check_deadline()
    owner = getattr(func, "__self__", None)
    if isinstance(owner, bytes):
        owner = owner.decode("latin-1")
        args = tuple(a.decode("latin-1") if isinstance(a, bytes) else a for a in args)
    elif type(owner) is int and (args or kwargs):
        check_int_arguments("method", f"int.{getattr(func, '__name__', '')}", args, kwargs)
        return
    if not isinstance(owner, str):
        return
    name = getattr(func, "__name__", "")
    if args or kwargs:
        check_int_arguments("method", f"str.{name}", args, kwargs)
    growth = _STR_METHOD_GROWTH.get(name)
    if growth is not None:
        size = growth(owner, *args, **kwargs)
        if size > MAX_VALUE_SIZE:
            raise too_big(f"str.{name}", size)


class BoundedSandbox(ImmutableSandboxedEnvironment):
    """The sandbox, with every operator, filter and method call that can build a
    large value or take long bounded before it runs (see template_bounds and below)."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right)
        result = super().call_binop(context, operator, left, right)
        note_built(result)
        return result

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(__obj, LoopContext) and args:
            # `loop(children)` of a recursive loop iterates like a `{% for %}`.
            args = (Counted(args[0]), *args[1:])
            return super().call(__context, __obj, *args, **kwargs)
        check_call(__obj, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs)
        note_built(result)
        return result

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        # Jinja's version, with widths, precisions and the result bounded.
        if not isinstance(value, types.MethodType | types.BuiltinMethodType):
            return None
        if value.__name__ not in ("format", "format_map"):
            return None
        owner = value.__self__
        if not isinstance(owner, str):
            return None
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            check_deadline()
            if is_format_map:
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                kwargs, args = args[0], ()
            return type(owner)(BoundedFormatter(self).vformat(owner, args, kwargs))

        return update_wrapper(wrapper, value)

    def getitem(self, obj: Any, argument: Any) -> Any:
        # What `selectattr('isdigit')`, `map(attribute=...)`, `sort(attribute=...)`
        # read: a method found by name (Jinja falls back to attributes) is not
        # data, and its truth must not select or sort anything.
        value = super().getitem(obj, argument)
        if isinstance(argument, str) and callable(value) and not isinstance(value, Undefined):
            raise CallableValue(METHOD_NOT_DATA)
        return value

    def getattr(self, obj: Any, attribute: str) -> Any:
        # Pool values are JSON data: in `{{ a.meta.items }}` the key "items" wins
        # over the dict method of that name, as in the plain-reference fast path.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except (KeyError, TypeError):
                pass
        return super().getattr(obj, attribute)


def make_env(undefined: type[Undefined]) -> BoundedSandbox:
    """The one environment every template is compiled in (templates.ENV)."""
    env = BoundedSandbox(undefined=undefined, autoescape=False, cache_size=0)
    env.globals.clear()
    filters = dict(env.filters, sum=bounded_sum)
    env.filters = {name: bound_filter(name, func) for name, func in filters.items()}
    env.filters.update(INTERNAL_FILTERS)
    return env
