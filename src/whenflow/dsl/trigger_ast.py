"""Syntax tree of trigger expressions (`startWhen`, `stopWhen`), DESIGN.md §4.

Columns are 0-based offsets into the expression text; the loader adds the
position of the expression in its file when reporting errors.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EventAtom:
    """`event:PATTERN`: a glob over event types, such as `shard_*.completed`."""

    pattern: str
    column: int = 0

    @property
    def source_glob(self) -> str:
        return self.pattern.partition(".")[0]

    @property
    def name_glob(self) -> str:
        return self.pattern.partition(".")[2]


@dataclass(frozen=True, slots=True)
class ConditionAtom:
    """`{{ jinja-expression }}` over the variable pool; `source` is the inner text.

    `spelled` keeps the text of a count, `count(event:P) >= 3`, which is the
    condition `events('P') | length >= 3` written in the trigger grammar.
    """

    source: str
    column: int = 0
    spelled: str | None = None


@dataclass(frozen=True, slots=True)
class Literal:
    value: bool
    column: int = 0


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr
    column: int = 0


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]
    column: int = 0


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]
    column: int = 0


Expr = EventAtom | ConditionAtom | Literal | Not | And | Or


def to_source(expr: Expr) -> str:
    """Print an expression back as text that parses to the same tree."""
    match expr:
        case EventAtom(pattern=pattern):
            return f"event:{pattern}"
        case ConditionAtom(source=source, spelled=spelled):
            return spelled or "{{ " + source.strip() + " }}"
        case Literal(value=value):
            return "true" if value else "false"
        case Not(operand=operand):
            inner = to_source(operand)
            return f"!({inner})" if isinstance(operand, And | Or) else f"!{inner}"
        case And(operands=operands):
            return " && ".join(
                f"({to_source(o)})" if isinstance(o, Or) else to_source(o) for o in operands
            )
        case Or(operands=operands):
            return " || ".join(to_source(o) for o in operands)
    raise TypeError(f"not an expression node: {expr!r}")


def atoms(expr: Expr) -> list[EventAtom | ConditionAtom]:
    """Every event and condition atom, left to right."""
    found: list[EventAtom | ConditionAtom] = []
    stack: list[Expr] = [expr]
    while stack:
        node = stack.pop()
        if isinstance(node, EventAtom | ConditionAtom):
            found.append(node)
        elif isinstance(node, Not):
            stack.append(node.operand)
        elif isinstance(node, And | Or):
            stack.extend(reversed(node.operands))
    return found
