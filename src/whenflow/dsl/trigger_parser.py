"""Recursive-descent parser for trigger expressions (grammar in DESIGN.md §4).

    expr      := or
    or        := and ("||" and)*
    and       := unary ("&&" unary)*
    unary     := "!" unary | "(" expr ")" | event | count | condition | "true" | "false"
    event     := "event:" PATTERN
    count     := "count(" "event:" PATTERN ")" (">=" | ">" | "<=" | "<" | "==") INTEGER
    condition := "{{" jinja-expression "}}"

A count is the condition `{{ events('PATTERN') | length OP INTEGER }}` (DESIGN.md
§5, Signals: `count(event:price.tick) >= 3` is true at the third tick).

Hand-written rather than generated: the grammar is tiny, and the errors can
then name the exact column and what was expected there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from whenflow.domain.errors import WhenflowError
from whenflow.dsl.trigger_ast import And, ConditionAtom, EventAtom, Expr, Literal, Not, Or

_PATTERN = re.compile(r"[A-Za-z0-9_*?\[\]!\-]+(?:\.[A-Za-z0-9_*?\[\]!\-]+)*")
_COUNT = re.compile(
    r"count\(\s*event:(?P<pattern>" + _PATTERN.pattern + r")\s*\)\s*"
    r"(?P<op>>=|<=|==|>|<)\s*(?P<n>\d{1,9})(?![A-Za-z0-9_])"
)


class ExpressionSyntaxError(WhenflowError):
    """A trigger expression does not parse; `column` is the 0-based offset."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"column {column + 1}: {message}")
        self.message = message
        self.column = column


@dataclass(slots=True)
class _Token:
    kind: str  # "&&" "||" "!" "(" ")" "event" "count" "cond" "bool" "end"
    text: str
    column: int


def _find_condition_end(text: str, start: int) -> int:
    """Offset of the `}}` closing a condition opened before `start`.

    Quoted text is skipped and braces are counted, so a dict literal such as
    `{'a': {'b': 1}}` inside the condition does not close it (as in Jinja's lexer).
    """
    quote: str | None = None
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif depth == 0 and text.startswith("}}", i):
            return i
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        i += 1
    return -1


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif text.startswith("&&", i) or text.startswith("||", i):
            tokens.append(_Token(text[i : i + 2], text[i : i + 2], i))
            i += 2
        elif ch in "!()":
            tokens.append(_Token(ch, ch, i))
            i += 1
        elif text.startswith("{{", i):
            end = _find_condition_end(text, i + 2)
            if end < 0:
                raise ExpressionSyntaxError("condition '{{' is never closed with '}}'", i)
            inner = text[i + 2 : end]
            if not inner.strip():
                raise ExpressionSyntaxError("empty condition '{{ }}'", i)
            tokens.append(_Token("cond", inner, i))
            i = end + 2
        elif text.startswith("event:", i):
            match = _PATTERN.match(text, i + 6)
            if not match:
                raise ExpressionSyntaxError(
                    "'event:' must be followed by a pattern like node.completed", i + 6
                )
            pattern = match.group(0)
            if "." not in pattern:
                raise ExpressionSyntaxError(
                    f"event pattern {pattern!r} needs a source and an event name, "
                    "like extract.completed or shard_*.completed",
                    i + 6,
                )
            tokens.append(_Token("event", pattern, i))
            i = match.end()
        elif text.startswith("count(", i):
            count = _COUNT.match(text, i)
            if not count or "." not in count.group("pattern"):
                raise ExpressionSyntaxError(
                    "write a count as count(event:<node>.<event>) followed by >=, >, <=, <"
                    " or == and a whole number, e.g. count(event:price.tick) >= 3",
                    i,
                )
            tokens.append(_Token("count", count.group(0), i))
            i = count.end()
        else:
            word = re.match(r"[A-Za-z_][A-Za-z0-9_]*", text[i:])
            if word and word.group(0) in ("true", "false"):
                tokens.append(_Token("bool", word.group(0), i))
                i += len(word.group(0))
            elif word:
                raise ExpressionSyntaxError(
                    f"unexpected {word.group(0)!r}; write event:{word.group(0)}.completed "
                    f"for an event or {{{{ {word.group(0)}... }}}} for a condition",
                    i,
                )
            else:
                raise ExpressionSyntaxError(f"unexpected character {ch!r}", i)
    tokens.append(_Token("end", "", n))
    return tokens


MAX_DEPTH = 100


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise ExpressionSyntaxError("empty expression", 0)
        expr = self.parse_or()
        token = self.peek()
        if token.kind != "end":
            raise ExpressionSyntaxError(
                f"unexpected {token.text!r}; expected '&&', '||' or the end", token.column
            )
        return expr

    def parse_or(self) -> Expr:
        first = self.parse_and()
        operands = [first]
        while self.peek().kind == "||":
            self.take()
            operands.append(self.parse_and())
        return first if len(operands) == 1 else Or(tuple(operands), _column(first))

    def parse_and(self) -> Expr:
        first = self.parse_unary()
        operands = [first]
        while self.peek().kind == "&&":
            self.take()
            operands.append(self.parse_unary())
        return first if len(operands) == 1 else And(tuple(operands), _column(first))

    def parse_unary(self) -> Expr:
        token = self.take()
        if token.kind in ("!", "("):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise ExpressionSyntaxError(
                    f"expression nests deeper than {MAX_DEPTH} levels", token.column
                )
        if token.kind == "!":
            operand = self.parse_unary()
            self.depth -= 1
            return Not(operand, token.column)
        if token.kind == "(":
            inner = self.parse_or()
            self.depth -= 1
            closing = self.take()
            if closing.kind != ")":
                raise ExpressionSyntaxError(
                    f"expected ')' to close the '(' at column {token.column + 1}", closing.column
                )
            return inner
        if token.kind == "event":
            return EventAtom(token.text, token.column)
        if token.kind == "cond":
            return ConditionAtom(token.text.strip(), token.column)
        if token.kind == "count":
            return _count(token)
        if token.kind == "bool":
            return Literal(token.text == "true", token.column)
        found = "the end" if token.kind == "end" else repr(token.text)
        raise ExpressionSyntaxError(
            f"expected event:..., {{{{ ... }}}}, true, false, '!' or '(' but found {found}",
            token.column,
        )


def _count(token: _Token) -> ConditionAtom:
    """`count(event:P) >= 3` as the condition `events('P') | length >= 3`."""
    match = _COUNT.match(token.text)
    assert match is not None
    pattern, op, n = match.group("pattern"), match.group("op"), int(match.group("n"))
    spelled = f"count(event:{pattern}) {op} {n}"
    return ConditionAtom(f"events('{pattern}') | length {op} {n}", token.column, spelled)


def _column(expr: Expr) -> int:
    return expr.column


def parse_trigger(text: str) -> Expr:
    """Parse a trigger expression; raise ExpressionSyntaxError with the column."""
    return _Parser(text).parse()
