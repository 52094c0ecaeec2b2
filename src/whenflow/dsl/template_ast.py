"""What whenflow does to a template's syntax tree besides parsing it.

- `bound_tree` rewrites a checked tree before it is compiled, so the bounds of
  `template_bounds` apply: every `{% for %}` iterates through the counting
  filter, every computed piece of output (and constant text inside a loop)
  goes through the emitting one, `a ~ b` becomes the bounded concatenation,
  and every attribute or item read that is not called is refused if it is a
  method (so `{{ not s.isdigit }}` fails instead of being false).
  The filters' names start with `_`, which a template's own text may not use,
  so no template can name or bypass them.
- `check_constants` evaluates, at load time, the constant subexpressions a
  template holds (`10 ** 1000`, `'x' * 5`) under the same size rules, so
  `validate` refuses `{{ ((10 ** 1000) ** 1000) ** 1000 > 0 }}` with its
  location instead of the run freezing on it.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from jinja2 import nodes
from jinja2.visitor import NodeTransformer

from whenflow.dsl.sandbox import check_filter_arguments, check_int_arguments
from whenflow.dsl.template_bounds import (
    CONCAT_FILTER,
    DATA_FILTER,
    EMIT_FILTER,
    LOOP_FILTER,
    TemplateLimitExceeded,
    check_binop,
)


def _wrap(node: nodes.Node, name: str) -> nodes.Filter:
    return nodes.Filter(node, name, [], [], None, None, lineno=node.lineno)


class _Bounder(NodeTransformer):
    def __init__(self) -> None:
        self.loops = 0  # how many `{% for %}` the visit is inside
        self.callees: set[int] = set()  # ids of the reads that a call calls (`s.upper()`)

    def visit_Call(self, node: nodes.Call) -> nodes.Node:
        self.callees.add(id(node.node))
        self.generic_visit(node)
        return node

    def _read(self, node: nodes.Getattr | nodes.Getitem) -> nodes.Node:
        self.generic_visit(node)
        return node if id(node) in self.callees else _wrap(node, DATA_FILTER)

    visit_Getattr = _read
    visit_Getitem = _read

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.loops += 1
        self.generic_visit(node)
        self.loops -= 1
        node.iter = _wrap(node.iter, LOOP_FILTER)
        return node

    def visit_Output(self, node: nodes.Output) -> nodes.Node:
        self.generic_visit(node)
        children: list[nodes.Node] = []
        for child in node.nodes:
            if not isinstance(child, nodes.TemplateData):
                children.append(_wrap(child, EMIT_FILTER))
            elif self.loops:
                children.append(_wrap(nodes.Const(child.data, lineno=child.lineno), EMIT_FILTER))
            else:  # constant text outside loops: as long as the template itself
                children.append(child)
        node.nodes = children  # type: ignore[assignment]
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return _wrap(nodes.List(node.nodes, lineno=node.lineno), CONCAT_FILTER)


def bound_tree(tree: nodes.Template, environment: Any) -> nodes.Template:
    """Rewrite `tree` in place for the bounded sandbox; returns it."""
    _Bounder().visit(tree)
    tree.set_environment(environment)
    return tree


class _NotConstant(Exception):
    pass


_BINARY: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}


def _fold(node: nodes.Node) -> Any:
    """The value of a constant expression; raise _NotConstant for anything else.

    Children of non-constant nodes are folded too, for their bound checks.
    """
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, nodes.List | nodes.Tuple):
        values = [_try_fold(item) for item in node.items]
        if any(v is _NOT for v in values):
            raise _NotConstant
        return values if isinstance(node, nodes.List) else tuple(values)
    if isinstance(node, nodes.BinExpr) and node.operator in _BINARY:
        left, right = _try_fold(node.left), _try_fold(node.right)
        if left is _NOT or right is _NOT:
            raise _NotConstant
        check_binop(node.operator, left, right)
        try:
            return _BINARY[node.operator](left, right)
        except Exception:  # 1 / 0 and the like are left to the run
            raise _NotConstant from None
    if isinstance(node, nodes.Filter) and node.node is not None:
        # `x | center(10 ** 9)`: the subject may vary, the size is constant.
        _try_fold(node.node)
        check_filter_arguments(node.name, _constant_arguments(node))
        raise _NotConstant
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Getattr):
        # `'a'.center(10 ** 9)`
        owner = _try_fold(node.node.node)
        arguments = _constant_arguments(node)
        if isinstance(owner, str):
            check_int_arguments("method", f"str.{node.node.attr}", arguments, {})
        raise _NotConstant
    if isinstance(node, nodes.Neg | nodes.Pos):
        value = _fold(node.node)
        if not isinstance(value, int | float):
            raise _NotConstant
        return -value if isinstance(node, nodes.Neg) else value
    for child in node.iter_child_nodes():
        _try_fold(child)
    raise _NotConstant


class _Not:
    pass


def _constant_arguments(node: nodes.Filter | nodes.Call) -> list[Any]:
    """The constant values among a call's arguments (every argument is folded)."""
    values = [_try_fold(a) for a in node.args] + [_try_fold(k.value) for k in node.kwargs]
    for extra in (node.dyn_args, node.dyn_kwargs):
        if extra is not None:
            _try_fold(extra)
    return [v for v in values if v is not _NOT]


_NOT = _Not()


def _try_fold(node: nodes.Node) -> Any:
    try:
        return _fold(node)
    except _NotConstant:
        return _NOT


def check_constants(tree: nodes.Node) -> None:
    """Raise TemplateLimitExceeded if a constant subexpression is over a bound."""
    try:
        _try_fold(tree)
    except TemplateLimitExceeded as exc:
        raise TemplateLimitExceeded(f"a constant in the template is over a limit: {exc}") from None
