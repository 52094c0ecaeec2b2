"""Every `{{ }}` in whenflow goes through the one sandbox, ENV, here (DESIGN.md §4, §10).

At load time `analyze_*` parses a template once, rejects escape attempts
(`__class__`, `|attr`, `{% include %}`...) and records which top-level names it
reads, so the validator can check node references and the engine can index them.
At run time `CompiledTemplate.evaluate` uses the compiled form, or, for a plain
reference such as `{{ extract.output_path }}`, a path lookup that compiles nothing.
"""

from __future__ import annotations

import re
import types
from collections.abc import Callable, ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NoReturn

from jinja2 import TemplateSyntaxError, Undefined, nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import UndefinedError
from jinja2.parser import Parser

from whenflow.domain.errors import WhenflowError
from whenflow.dsl.sandbox import make_env
from whenflow.dsl.template_ast import bound_tree, check_constants
from whenflow.dsl.template_bounds import (
    MAX_BUILT_SIZE,
    CallableValue,
    check_result,
    end_budget,
    start_budget,
)

# Names a template may use besides node ids.
HELPER_NAMES = frozenset({"events", "settled", "any_ok", "now", "secret"})
NODE_HELPERS = frozenset({"settled", "any_ok"})  # helpers whose arguments are nodes
ENDING_SCOPE = "ending"
"""`{{ ending.status }}`, `{{ ending.reason }}`, `{{ ending.failed }}`: finally nodes only."""
SCOPE_NAMES = frozenset({"pipeline", "system", "item", "index", "event", ENDING_SCOPE})
RESERVED_NAMES = HELPER_NAMES | SCOPE_NAMES | frozenset({"true", "false", "none", "loop"})

MAX_NESTING = 32
"""Deepest nesting of brackets in one template; Jinja's parser and compiler recurse."""

_FORBIDDEN_STATEMENTS = (
    nodes.Include,
    nodes.Import,
    nodes.FromImport,
    nodes.Extends,
    nodes.Macro,
    nodes.CallBlock,
    nodes.Block,
    nodes.FilterBlock,
    nodes.Scope,
)


class TemplateSafetyError(WhenflowError):
    """A template tries to leave the sandbox or uses a construct whenflow forbids."""


class TemplateSyntaxProblem(WhenflowError):
    """A template does not parse; `lineno` is 1-based within the template text."""

    def __init__(self, message: str, lineno: int) -> None:
        super().__init__(message)
        self.lineno = lineno


class Missing(Undefined):
    """A variable that was never written (its node was skipped, failed, or did not set it).

    Comparisons with it are false (like NaN, so `!=` is true), it is falsy, and
    attribute access on it stays missing. Rendering it as text or computing with
    it raises, so missing data is never silently turned into "" or 0.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return False

    def __hash__(self) -> int:
        return id(type(self))

    def __bool__(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self

    def __getitem__(self, key: object) -> Missing:  # type: ignore[override]
        return self

    def __len__(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Any]:
        self._fail_with_undefined_error()

    def __str__(self) -> str:
        self._fail_with_undefined_error()


ENV = make_env(Missing)


class Namespace:
    """What a template sees for a node or scope: `{{ node.output }}`.

    Only `__getitem__` is public, so an output named `items` or `keys` is found
    instead of a dict method; the leading-underscore slots are out of a
    template's reach because such attributes are rejected at load time.
    """

    __slots__ = ("_name", "_values")

    def __init__(self, name: str, values: Mapping[str, Any]) -> None:
        self._name = name
        self._values = values

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __repr__(self) -> str:
        return f"<{self._name}>"


@dataclass(frozen=True, slots=True)
class TemplateInfo:
    """What static analysis learned about one template."""

    source: str
    kind: str  # "literal" | "expression" | "text"
    names: frozenset[str] = frozenset()  # top-level names read (node ids, scopes, helpers)
    event_patterns: tuple[str, ...] = ()  # constant arguments of events(...)
    dynamic_events: bool = False  # events(...) with a non-constant argument
    path: tuple[str | int, ...] | None = None  # set for a plain reference
    expression: str | None = None  # the inner text of a single {{ }}


def _check_safety(tree: nodes.Node) -> None:
    for node in tree.find_all(nodes.Node):
        if isinstance(node, _FORBIDDEN_STATEMENTS):
            raise TemplateSafetyError(
                f"'{type(node).__name__.lower()}' statements are not allowed in templates"
            )
        if isinstance(node, nodes.Getattr) and node.attr.startswith("_"):
            raise TemplateSafetyError(
                f"attribute {node.attr!r} is not allowed: names starting with '_' are private"
            )
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and "__" in node.value:
            raise TemplateSafetyError(f"the string {node.value!r} is not allowed in a template")
        if isinstance(node, nodes.Filter | nodes.Test) and node.name == "attr":
            raise TemplateSafetyError("the 'attr' filter is not allowed")
        if isinstance(node, nodes.Filter | nodes.Test) and node.name.startswith("_"):
            raise TemplateSafetyError(f"filter or test {node.name!r} is not allowed")
        if isinstance(node, nodes.Name) and node.name.startswith("_"):
            raise TemplateSafetyError(f"name {node.name!r} is not allowed")


def _check_nesting(text: str) -> None:
    """Refuse brackets nested over MAX_NESTING deep before Jinja's parser recurses into them.

    Only brackets inside `{{ }}` and `{% %}`, outside quotes, count: text around
    them is never parsed as an expression.
    """
    depth = 0
    quote = ""
    inside = False
    lineno = 1
    i = 0
    while i < len(text):
        ch = text[i]
        pair = text[i : i + 2]
        if ch == "\n":
            lineno += 1
        if not inside:
            if pair in ("{{", "{%"):
                inside, depth, i = True, 0, i + 1
        elif quote:
            if ch == quote:
                quote = ""
        elif pair in ("}}", "%}") and depth <= 0:
            inside, i = False, i + 1
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
            if depth > MAX_NESTING:
                raise TemplateSyntaxProblem(
                    f"brackets nest deeper than {MAX_NESTING} levels; "
                    "split the expression, e.g. compute parts in an earlier node",
                    lineno,
                )
        elif ch in ")]}":
            depth -= 1
        i += 1


_TOO_DEEP = (RecursionError, MemoryError, SyntaxError)
"""What Jinja's recursive parser and compiler, and Python's, raise on a deep tree."""


def _too_deep(exc: BaseException) -> TemplateSyntaxProblem:
    return TemplateSyntaxProblem(
        f"the template is too deeply nested to compile ({type(exc).__name__}); "
        "split the expression, e.g. compute parts in an earlier node",
        1,
    )


def _parse(text: str) -> nodes.Template:
    _check_nesting(text)
    try:
        return ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(exc.message or str(exc), exc.lineno) from None
    except _TOO_DEEP as exc:
        raise _too_deep(exc) from None


def _plain_path(expr: nodes.Expr) -> tuple[str | int, ...] | None:
    """(`a`, `b`, 0) for `a.b[0]`; None if the expression is anything more."""
    parts: list[str | int] = []
    while True:
        if isinstance(expr, nodes.Getattr):
            parts.append(expr.attr)
            expr = expr.node
        elif (
            isinstance(expr, nodes.Getitem)
            and isinstance(expr.arg, nodes.Const)
            and isinstance(expr.arg.value, str | int)
            and not isinstance(expr.arg.value, bool)
        ):
            parts.append(expr.arg.value)
            expr = expr.node
        elif isinstance(expr, nodes.Name) and expr.ctx == "load":
            parts.append(expr.name)
            return tuple(reversed(parts))
        else:
            return None


def _info(source: str, kind: str, tree: nodes.Node, expression: str | None) -> TemplateInfo:
    try:
        _check_safety(tree)
        check_constants(tree)
        return _read_info(source, kind, tree, expression)
    except _TOO_DEEP as exc:
        raise _too_deep(exc) from None


def _read_info(source: str, kind: str, tree: nodes.Node, expression: str | None) -> TemplateInfo:
    stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    names = frozenset(
        n.name for n in tree.find_all(nodes.Name) if n.ctx == "load" and n.name not in stored
    )
    patterns: list[str] = []
    dynamic = False
    quoted_nodes: set[str] = set()
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Name) and call.node.name in NODE_HELPERS:
            # settled('a') names node a as surely as settled(a) does.
            quoted_nodes.update(
                a.value
                for a in call.args
                if isinstance(a, nodes.Const) and isinstance(a.value, str)
            )
        if isinstance(call.node, nodes.Name) and call.node.name == "events":
            for arg in call.args:
                if isinstance(arg, nodes.Const) and isinstance(arg.value, str):
                    patterns.append(arg.value)
                else:
                    dynamic = True
            if not call.args:
                dynamic = True
    names = names | quoted_nodes
    path = None
    if kind == "expression":
        body = tree.body[0] if isinstance(tree, nodes.Template) else None
        if isinstance(body, nodes.Output) and len(body.nodes) == 1:
            path = _plain_path(body.nodes[0])
    return TemplateInfo(source, kind, names, tuple(patterns), dynamic, path, expression)


def single_expression(text: str) -> str | None:
    """The inner text if `text` is exactly one `{{ expr }}` (surrounding blanks allowed)."""
    stripped = text.strip()
    if not (stripped.startswith("{{") and stripped.endswith("}}")):
        return None
    inner = stripped[2:-2]
    if "{{" in inner or "}}" in inner or "{%" in inner:
        return None
    return inner.strip()


# `a.b[0].c`: identifiers (none private) and integer indexes, nothing else.
_PLAIN_REFERENCE = re.compile(r"[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*|\[\d+\])*")
_LITERAL_NAMES = frozenset({"true", "false", "none", "True", "False", "None"})


def _plain_reference(expression: str) -> TemplateInfo | None:
    """The most common binding, recognised without Jinja (DESIGN.md §4's fast path).

    The regex admits strictly less than the sandbox check would, so skipping the
    parse loses no safety; anything else goes through Jinja.
    """
    text = expression.strip()
    if not _PLAIN_REFERENCE.fullmatch(text):
        return None
    parts: list[str | int] = []
    for segment in re.findall(r"[A-Za-z][A-Za-z0-9_]*|\[\d+\]", text):
        parts.append(int(segment[1:-1]) if segment.startswith("[") else segment)
    head = parts[0]
    if not isinstance(head, str) or head in _LITERAL_NAMES or head in _JINJA_WORDS:
        return None
    return TemplateInfo(
        expression, "expression", frozenset({head}), (), False, tuple(parts), expression
    )


_JINJA_WORDS = frozenset({"and", "or", "not", "in", "is", "if", "else", "loop", "self"})


# `fan.results[*].y` (DESIGN.md §5) projects a field of every item.
_PROJECTION = re.compile(
    r"(?P<base>[A-Za-z][A-Za-z0-9_]*(?:\.[A-Za-z][A-Za-z0-9_]*|\[\d+\])*)\[\*\]\.(?P<field>[A-Za-z][A-Za-z0-9_]*)"
)


def desugar_projections(text: str) -> str:
    """Rewrite `x[*].f` as `(x | map(attribute='f') | list)`, before Jinja parses it.

    The rewrite only produces Jinja the sandbox checks like any other text, and
    the field must be a public name, so it opens nothing new.
    """
    if "[*]" not in text:
        return text
    return _PROJECTION.sub(r"(\g<base> | map(attribute='\g<field>') | list)", text)


@lru_cache(maxsize=4096)
def analyze_expression(expression: str) -> TemplateInfo:
    """Analyse the inner text of a `{{ }}` condition; raise on syntax or safety errors."""
    plain = _plain_reference(expression)
    if plain is not None:
        return plain
    jinja_text = desugar_projections(expression)
    tree = _parse("{{ " + jinja_text + " }}")
    return _info(expression, "expression", tree, jinja_text)


@lru_cache(maxsize=4096)
def analyze_template(text: str) -> TemplateInfo:
    """Analyse a rendered field: a literal, one `{{ expr }}` (native value), or text."""
    inner = single_expression(text)
    if inner is not None:
        return analyze_expression(inner)
    if "{{" not in text and "{%" not in text and "{#" not in text:
        return TemplateInfo(text, "literal")
    tree = _parse(desugar_projections(text))
    return _info(text, "text", tree, None)


def _lookup(context: Mapping[str, Any], path: tuple[str | int, ...]) -> Any:
    value: Any = context.get(path[0], None) if isinstance(path[0], str) else None
    if value is None and path[0] not in context:
        return Missing(name=str(path[0]))
    for part in path[1:]:
        if isinstance(value, Missing):
            return value
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            if isinstance(part, str) and not isinstance(value, Namespace | Mapping | list):
                # Fall back to Jinja's attribute semantics for odd objects
                # (`{{ a.when.year }}`); a method found so is refused by the caller.
                value = ENV.getattr(value, part)
                continue
            return Missing(name=str(part))
    return value


_LAZY = (types.GeneratorType, Iterator, KeysView, ValuesView, ItemsView)
"""Results that are not data yet: iterators and dict views."""

_METHOD_NOT_DATA = CallableValue(
    "it reads a method, not data (a key of that name is missing; "
    "call it, e.g. items(), or use a filter such as dictsort)"
)


@dataclass(frozen=True)
class CompiledTemplate:
    """A template ready to evaluate many times; compile once per pipeline version."""

    info: TemplateInfo
    _expression: Callable[..., Any] | None = field(default=None, repr=False)
    _template: Any = field(default=None, repr=False)

    def evaluate(self, context: Mapping[str, Any]) -> Any:
        """Native value for a single expression, text for a text template.

        Whatever goes wrong (an error, a bound, even MemoryError or
        RecursionError) raises TemplateEvaluationError with the template in the
        message, so it fails the node that evaluated it and nothing else.
        """
        info = self.info
        if info.kind == "literal":
            return info.source
        if info.path is not None:
            try:
                value = _lookup(context, info.path)
            except Exception as exc:  # an odd pool object's own error
                _raise_eval(info.source, exc)
            if callable(value) and not isinstance(value, Missing):
                _raise_eval(info.source, _METHOD_NOT_DATA)
            return value
        scope = {n: context[n] for n in info.names if n in context}
        token = start_budget()
        try:
            if self._expression is not None:
                value = self._expression(**scope)
                if isinstance(value, _LAZY):
                    # `x | map(...)` without `| list`, `x | reverse`, `d.keys()`:
                    # consumed here, under the bounds, never later by a task
                    # (which got an iterator, or its repr as text).
                    value = list(value)
                check_result(value, MAX_BUILT_SIZE)
                return value
            rendered: str = self._template.render(**scope)
            check_result(rendered)  # constant text outside loops is not counted as emitted
            return rendered
        except Exception as exc:  # any failure of a template is its node's, never the engine's
            _raise_eval(info.source, exc)
        finally:
            end_budget(token)


class TemplateEvaluationError(WhenflowError):
    """A template raised while being evaluated; the message quotes it."""

    def __init__(self, source: str, message: str) -> None:
        bare = "{{" not in source and "{%" not in source
        super().__init__(f"{{{{ {source} }}}}: {message}" if bare else f"{source}: {message}")
        self.source = source
        self.reason = message


def _raise_eval(source: str, exc: Exception) -> NoReturn:
    if isinstance(exc, TemplateEvaluationError):
        raise exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, UndefinedError):
        message = f"a value it reads is missing ({message})"
    elif isinstance(exc, RecursionError):
        message = "it recursed too deeply (a recursive loop or a deeply nested value)"
    elif isinstance(exc, MemoryError):
        message = "it ran out of memory"
    raise TemplateEvaluationError(source, f"{type(exc).__name__}: {message}") from exc


def _compile_expression(expression: str) -> TemplateExpression:
    """Jinja's `compile_expression`, with the tree bounded before it is compiled."""
    parser = Parser(ENV, expression, state="variable")
    try:
        expr = parser.parse_expression()
        if not parser.stream.eos:
            raise TemplateSyntaxError("chunk after expression", parser.stream.current.lineno)
    except TemplateSyntaxError as exc:
        raise TemplateSyntaxProblem(exc.message or str(exc), exc.lineno) from None
    body = [nodes.Assign(nodes.Name("result", "store"), expr, lineno=1)]
    tree = bound_tree(nodes.Template(body, lineno=1), ENV)
    return TemplateExpression(ENV.from_string(tree), undefined_to_none=False)


@lru_cache(maxsize=8192)
def compile_template(text: str) -> CompiledTemplate:
    """Compile a rendered field (see `analyze_template`); cached by its text.

    Raises TemplateSyntaxProblem if it cannot be compiled, e.g. nests too deeply.
    """
    info = analyze_template(text)
    if info.kind == "literal" or info.path is not None:
        return CompiledTemplate(info)
    try:
        if info.kind == "expression":
            assert info.expression is not None
            return CompiledTemplate(info, _expression=_compile_expression(info.expression))
        tree = bound_tree(_parse(desugar_projections(text)), ENV)
        return CompiledTemplate(info, _template=ENV.from_string(tree))
    except _TOO_DEEP as exc:
        raise _too_deep(exc) from None


def compile_condition(expression: str) -> CompiledTemplate:
    """Compile the inner text of a `{{ }}` trigger condition."""
    return compile_template("{{ " + expression + " }}")
