"""Bounds on template evaluation in time and size (DESIGN.md §10, docs/expressions.md#bounds).

Templates run on the dispatcher's loop, so one evaluation must never stall it
or exhaust memory. Every way a template can take long or build something big
is bounded, and sizes are estimated *before* the operation allocates:

- time: loops are the only unbounded-time construct once sizes are bounded.
  Every `{% for %}` (and each `loop(...)` of a recursive loop) iterates through
  `Counted`, which counts the iterations of the whole evaluation against
  MAX_LOOP_ITERATIONS; the deadline MAX_EVALUATION_SECONDS is checked every
  DEADLINE_CHECK_EVERY iterations and at every filter, method call and
  intercepted operator.
- numbers: `**` and `*` on integers are refused when the result would have over
  MAX_INT_BITS bits (`base.bit_length() * exponent`, so `((10 ** 1000) ** 1000)`
  is refused before it is computed).
- values: `*` and `+` on text, lists and tuples, `~`, `%` and `str.format`
  widths, and the filters and methods that grow their input (`center`, `indent`,
  `wordwrap`, `replace`, `join`, `sum`, `expandtabs`, ...) are refused when the
  result would exceed MAX_VALUE_SIZE (characters of text plus one per list item
  or dict entry, counted deeply). Any integer argument over MAX_VALUE_SIZE to a
  filter or a method of a string is refused, unless the filter takes data there
  (`default`, `format`, `sum`'s start...). The rules for filters and methods,
  and the environment that applies all of these, are in `sandbox.py`.
- text: what a text template emits counts against MAX_RENDERED_CHARS.
- in all: the sizes of what every filter, method and operator returns add up
  against MAX_BUILT_SIZE.

A bound that is hit raises TemplateLimitExceeded, which the evaluation turns
into a TemplateEvaluationError naming the template and the limit.
"""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import Any

from jinja2.runtime import Context, Undefined
from jinja2.sandbox import SandboxedFormatter
from jinja2.utils import pass_context

from whenflow.domain.errors import WhenflowError

MAX_EVALUATION_SECONDS = 0.5
"""Wall-clock budget of one evaluation of one template."""
MAX_LOOP_ITERATIONS = 1_000_000
"""Iterations of all the loops of one evaluation together."""
DEADLINE_CHECK_EVERY = 1024
"""Loop iterations between two looks at the clock (a power of two)."""
MAX_INT_BITS = 16_384
"""Largest integer a template may build (about 4,900 decimal digits; Python
refuses to print integers over 4,300 digits anyway)."""
MAX_VALUE_SIZE = 1_000_000
"""Largest value a template may build: characters of text plus one per list
item or dict entry, counted deeply."""
MAX_RENDERED_CHARS = 1_000_000
"""Characters a text template may emit in one evaluation."""
MAX_BUILT_SIZE = 16 * MAX_VALUE_SIZE
"""Size of everything the filters, methods and operators of one evaluation return,
added up: many values each under MAX_VALUE_SIZE (`map('center', 999999)` over a
long list) must not add up to gigabytes before the deadline."""

LOOP_FILTER = "_wf_loop"
DATA_FILTER = "_wf_data"
EMIT_FILTER = "_wf_emit"
CONCAT_FILTER = "_wf_concat"


class TemplateLimitExceeded(WhenflowError):
    """A template would exceed one of the bounds of this module."""


class CallableValue(WhenflowError):
    """A template's value is, or contains, a method or function instead of data."""


METHOD_NOT_DATA = (
    "it reads a method, not data (a key of that name is missing; "
    "call it, e.g. items(), or use a filter such as dictsort)"
)


class Budget:
    """What one evaluation has spent so far.

    A plain class with class-level zeros rather than a dataclass: one is made
    per evaluation, and `Budget()` plus one attribute costs a third of a
    generated `__init__` (the 8 µs evaluation path is measured).
    """

    deadline = 0.0
    iterations = 0
    emitted = 0
    built = 0

    def check_clock(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitExceeded(
                f"evaluation took over {MAX_EVALUATION_SECONDS} s, "
                "the time limit of one template (MAX_EVALUATION_SECONDS)"
            )


_BUDGET: ContextVar[Budget | None] = ContextVar("whenflow_template_budget", default=None)


def new_budget() -> Budget:
    budget = Budget()
    budget.deadline = time.monotonic() + MAX_EVALUATION_SECONDS
    return budget


def start_budget() -> Token[Budget | None]:
    """Open the budget of one evaluation; pass the token to `end_budget`."""
    return _BUDGET.set(new_budget())


def end_budget(token: Token[Budget | None]) -> None:
    _BUDGET.reset(token)


def check_deadline() -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.check_clock()


def note_built(value: Any) -> None:
    """Add the size of what a filter, method or operator returned to the evaluation's total."""
    kind = type(value)
    if (
        kind is not str
        and kind is not list
        and kind is not tuple
        and kind is not dict
        and kind is not bytes
    ):
        return
    budget = _BUDGET.get()
    if budget is None:
        return
    # What was allocated: characters, or item slots (a list of shared items is
    # measured deeply where it becomes text or an expression's value).
    budget.built += len(value)
    if budget.built > MAX_BUILT_SIZE:
        raise TemplateLimitExceeded(
            f"the values it builds add up to over {MAX_BUILT_SIZE:,} (characters of text "
            "plus one per list item), the limit of one template (MAX_BUILT_SIZE)"
        )


def too_big(what: str, size: int) -> TemplateLimitExceeded:
    return TemplateLimitExceeded(
        f"{what} would make a value of size {size:,}, over the limit of {MAX_VALUE_SIZE:,} "
        "(characters of text plus one per list item)"
    )


# ------------------------------------------------------------------ sizes


def value_size(value: Any, limit: int = MAX_VALUE_SIZE) -> int:
    """Characters of text plus one per list item or dict entry, counted deeply.

    Stops counting once past `limit`, so measuring costs at most `limit` steps.
    Integers count their decimal digits; other scalars count nothing.
    """
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is list or kind is tuple or kind is dict:
            total += len(item)
            for child in itertools.chain(item.keys(), item.values()) if kind is dict else item:
                kind = type(child)
                if kind is str:
                    total += len(child)
                elif kind is list or kind is tuple or kind is dict:
                    stack.append(child)
                elif kind is not int and kind is not float and kind is not bool:
                    total += _scalar_size(child)
                elif kind is int and (child > _SMALL or child < -_SMALL):
                    total += child.bit_length() * 3 // 10
            if total > limit:
                return total
        else:
            total += _scalar_size(item)
    return total


_SMALL = 0xFFFFFFFF


def _scalar_size(item: Any) -> int:
    if isinstance(item, str | bytes):
        return len(item)
    if type(item) is int and (item > _SMALL or item < -_SMALL):
        return item.bit_length() * 3 // 10
    return 0


def check_result(value: Any, limit: int = MAX_VALUE_SIZE) -> None:
    """Refuse a value that is or contains a callable, or whose size is over `limit`.

    Text (and what becomes text) is held to MAX_VALUE_SIZE; a list or dict an
    expression returns, often pool data passed through a filter, to MAX_BUILT_SIZE.
    """
    kind = type(value)
    if kind in _PLAIN:
        if kind is str and len(value) > MAX_VALUE_SIZE:
            raise TemplateLimitExceeded(
                f"the text is over the limit of {MAX_VALUE_SIZE:,} characters"
            )
        return
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is bytes:
            total += len(item)
        elif kind is list or kind is tuple:
            total += len(item)
            stack.extend(item)
        elif kind is dict:
            total += len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif kind is int or kind is float or kind is bool or item is None:
            continue
        elif callable(item) and not isinstance(item, Undefined):
            raise CallableValue(METHOD_NOT_DATA)
        if total > limit:
            raise TemplateLimitExceeded(
                f"the value's size is over the limit of {limit:,} "
                "(characters of text plus one per list item, counted deeply)"
            )


_PLAIN = frozenset({str, int, float, bool, type(None)})


def as_text(value: Any) -> str:
    """`str(value)` once the value is known to be data of a bounded size."""
    kind = type(value)
    if kind in _PLAIN and kind is not int:  # a big int is measured first
        return str(value)
    if not isinstance(value, Undefined):
        check_result(value)
    return str(value)  # a missing value raises here, as Jinja would


# ------------------------------------------------------------- operators


_NUMBERS = frozenset({int, float, bool})


def check_binop(operator: str, left: Any, right: Any) -> None:
    """Refuse `left <operator> right` if its result would be over a bound."""
    if type(left) in _NUMBERS and type(right) in _NUMBERS:
        # The common case, kept cheap: only integer growth is bounded.
        if operator == "**" and type(left) is int and type(right) is int:
            if right > 0 and abs(left) > 1:
                bits = right * math.log2(abs(left))
                if bits > MAX_INT_BITS:
                    raise TemplateLimitExceeded(
                        f"'**' would make a number of about {bits:,.0f} bits, "
                        f"over the limit of {MAX_INT_BITS:,} (MAX_INT_BITS)"
                    )
        elif operator == "*" and type(left) is not float and type(right) is not float:
            bits = left.bit_length() + right.bit_length()
            if bits > MAX_INT_BITS:
                raise TemplateLimitExceeded(
                    f"'*' would make a number of about {bits:,} bits, "
                    f"over the limit of {MAX_INT_BITS:,} (MAX_INT_BITS)"
                )
        return
    check_deadline()  # on text and lists an operation costs as much as their length
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            # Text up to MAX_VALUE_SIZE characters, a list up to as many items
            # (`[big] * 20` shares `big`: measured deeply where it becomes text).
            # Bytes (`'x'.encode()`) are bounded as text is.
            if (
                isinstance(seq, str | bytes | list | tuple)
                and isinstance(times, int)
                and len(seq) * times > MAX_VALUE_SIZE
            ):
                raise too_big("'*'", len(seq) * times)
    elif operator == "+":
        if (
            isinstance(left, str | bytes | list | tuple)
            and isinstance(right, str | bytes | list | tuple)
            and len(left) + len(right) > MAX_VALUE_SIZE
        ):
            raise too_big("'+'", len(left) + len(right))
    elif operator == "%" and isinstance(left, str):
        check_printf(left, right)
    elif operator == "%" and isinstance(left, bytes):
        check_printf(left.decode("latin-1"), right)


# `%[(name)][flags][width][.precision][length]type`, as in printf-style formatting.
_PRINTF = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.?)", re.S)


def check_printf(fmt: str, args: Any) -> None:
    """Refuse `fmt % args` if its widths and precisions add up to over MAX_VALUE_SIZE,
    or if an argument is a callable (its text would be a repr, not data)."""
    check_result(args)
    values = args if isinstance(args, tuple) else (args,)
    position = 0
    total = len(fmt)
    for match in _PRINTF.finditer(fmt):
        width, precision, conversion = match.groups()
        if conversion == "%":
            continue
        for part in (width, precision):
            if part == "*":
                star = values[position] if position < len(values) else 0
                position += 1
                total += abs(star) if isinstance(star, int) else 0
            elif part:
                total += _digits(part)
        position += 1
    if total > MAX_VALUE_SIZE:
        raise TemplateLimitExceeded(
            f"'%' formatting asks for widths of {total:,} characters, "
            f"over the limit of {MAX_VALUE_SIZE:,}"
        )


def _digits(text: str) -> int:
    # A number of over 7 digits is over every limit; never parse a huge one.
    return int(text) if len(text) <= 7 else MAX_VALUE_SIZE + 1


# `[[fill]align][sign][z][#][0][width][grouping][.precision][type]` of str.format.
_FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?")


class BoundedFormatter(SandboxedFormatter):
    """The sandbox's `str.format`, with widths, precisions and the result bounded."""

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        self._total = 0

    def format_field(self, value: Any, format_spec: str) -> Any:
        check_result(value)
        match = _FORMAT_SPEC.match(format_spec)
        if match is not None:
            width, precision = match.groups()
            asked = (_digits(width) if width else 0) + (_digits(precision) if precision else 0)
            if asked > MAX_VALUE_SIZE:
                raise TemplateLimitExceeded(
                    f"format spec {format_spec[:40]!r} asks for {asked:,} characters, "
                    f"over the limit of {MAX_VALUE_SIZE:,}"
                )
        text = super().format_field(value, format_spec)
        self._total += len(text)
        if self._total > MAX_VALUE_SIZE:
            raise too_big("str.format", self._total)
        return text


# ------------------------------------------- the sandbox's own filters


class Counted:
    """An iterable whose iterations count against the evaluation's budget."""

    __slots__ = ("_source",)

    def __init__(self, source: Any) -> None:
        self._source = source

    def __len__(self) -> int:
        return len(self._source)

    def __iter__(self) -> Iterator[Any]:
        budget = _BUDGET.get() or new_budget()
        for item in self._source:
            budget.iterations += 1
            if not budget.iterations % DEADLINE_CHECK_EVERY:
                if budget.iterations > MAX_LOOP_ITERATIONS:
                    raise TemplateLimitExceeded(
                        f"loops ran over {MAX_LOOP_ITERATIONS:,} iterations, the limit of "
                        "one template (MAX_LOOP_ITERATIONS)"
                    )
                budget.check_clock()
            yield item


@pass_context
def loop_filter(context: Context, iterable: Any) -> Counted:
    """What every `{% for %}` iterates through (inserted at compile time)."""
    return Counted(iterable)


@pass_context
def emit_filter(context: Context, value: Any) -> str:
    """What every piece of a text template's output goes through (inserted at compile time)."""
    text = as_text(value)
    budget = _BUDGET.get()
    if budget is not None:
        budget.emitted += len(text)
        if budget.emitted > MAX_RENDERED_CHARS:
            raise TemplateLimitExceeded(
                f"rendered text is over {MAX_RENDERED_CHARS:,} characters (MAX_RENDERED_CHARS)"
            )
    return text


@pass_context
def concat_filter(context: Context, parts: list[Any]) -> str:
    """What `a ~ b` becomes (inserted at compile time): the joined text, bounded."""
    texts = []
    total = 0
    for part in parts:
        text = as_text(part)
        total += len(text)
        if total > MAX_VALUE_SIZE:
            raise too_big("'~'", total)
        texts.append(text)
    return "".join(texts)


def data_filter(value: Any) -> Any:
    """What every attribute or item read that is not called goes through (inserted at
    compile time): a method read as data never decides a truth value or a comparison
    (`{{ not src.s.isdigit }}`), as it never becomes a value."""
    if callable(value) and not isinstance(value, Undefined):
        raise CallableValue(METHOD_NOT_DATA)
    return value


INTERNAL_FILTERS: Mapping[str, Callable[..., Any]] = {
    DATA_FILTER: data_filter,
    LOOP_FILTER: loop_filter,
    EMIT_FILTER: emit_filter,
    CONCAT_FILTER: concat_filter,
}
