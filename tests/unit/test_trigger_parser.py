"""Trigger expressions (DESIGN.md §4): parsing, precedence, printing, located errors."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from whenflow.dsl.trigger_ast import (
    And,
    ConditionAtom,
    EventAtom,
    Expr,
    Literal,
    Not,
    Or,
    atoms,
    to_source,
)
from whenflow.dsl.trigger_parser import ExpressionSyntaxError, parse_trigger

# ---------------------------------------------------------------------------
# Helpers


def normalise(expr: Expr) -> Expr:
    """The same tree with every column zeroed and And-in-And / Or-in-Or flattened."""
    match expr:
        case EventAtom() | ConditionAtom() | Literal():
            return dataclasses.replace(expr, column=0)
        case Not(operand=operand):
            return Not(normalise(operand))
        case And(operands=operands) | Or(operands=operands):
            kind = type(expr)
            flat: list[Expr] = []
            for operand in operands:
                child = normalise(operand)
                if isinstance(child, kind):
                    flat.extend(child.operands)
                else:
                    flat.append(child)
            return kind(tuple(flat))
    raise TypeError(f"not an expression node: {expr!r}")


def ev(pattern: str) -> EventAtom:
    return EventAtom(pattern)


def cond(source: str) -> ConditionAtom:
    return ConditionAtom(source)


def parse_norm(text: str) -> Expr:
    return normalise(parse_trigger(text))


def syntax_error(text: str) -> ExpressionSyntaxError:
    with pytest.raises(ExpressionSyntaxError) as info:
        parse_trigger(text)
    return info.value


# ---------------------------------------------------------------------------
# Examples from DESIGN.md §2 and §4


def test_design_section2_trigger_with_columns() -> None:
    text = "event:extract_data.completed && {{ extract_data.row_count > 0 }}"
    assert parse_trigger(text) == And(
        (
            EventAtom("extract_data.completed", 0),
            ConditionAtom("extract_data.row_count > 0", 32),
        ),
        0,
    )


def test_design_section2_empty_branch() -> None:
    text = "event:extract_data.completed && {{ extract_data.row_count == 0 }}"
    assert parse_norm(text) == And(
        (ev("extract_data.completed"), cond("extract_data.row_count == 0"))
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("event:shard_*.completed", ev("shard_*.completed")),
        ("event:pipeline.started", ev("pipeline.started")),
        ("event:external.approved_by_ops", ev("external.approved_by_ops")),
        (
            "{{ events('shard_*.completed') | length >= 3 }}",
            cond("events('shard_*.completed') | length >= 3"),
        ),
        ("{{ settled(a, b) and any_ok(a, b) }}", cond("settled(a, b) and any_ok(a, b)")),
        (
            "event:pipeline.started && event:extract.completed",
            And((ev("pipeline.started"), ev("extract.completed"))),
        ),
        ("true", Literal(True)),
        ("false", Literal(False)),
        # `}}` inside a quoted string does not close the condition.
        ("{{ a.name == 'x}}y' }}", cond("a.name == 'x}}y'")),
        # Whitespace around tokens is free, and optional between them.
        ("  event:a.b&&!{{a.x}}  ", And((ev("a.b"), Not(cond("a.x"))))),
    ],
)
def test_design_examples_parse(text: str, expected: Expr) -> None:
    assert parse_norm(text) == expected


# ---------------------------------------------------------------------------
# Precedence


def test_and_binds_tighter_than_or() -> None:
    assert parse_norm("event:a.x || event:b.x && event:c.x") == Or(
        (ev("a.x"), And((ev("b.x"), ev("c.x"))))
    )
    assert parse_norm("event:a.x && event:b.x || event:c.x") == Or(
        (And((ev("a.x"), ev("b.x"))), ev("c.x"))
    )


def test_not_binds_tightest() -> None:
    assert parse_norm("!event:a.x && event:b.x") == And((Not(ev("a.x")), ev("b.x")))
    assert parse_norm("!event:a.x || event:b.x") == Or((Not(ev("a.x")), ev("b.x")))
    assert parse_norm("!!true") == Not(Not(Literal(True)))


def test_parentheses_override_precedence() -> None:
    assert parse_norm("(event:a.x || event:b.x) && event:c.x") == And(
        (Or((ev("a.x"), ev("b.x"))), ev("c.x"))
    )
    assert parse_norm("!(event:a.x && event:b.x)") == Not(And((ev("a.x"), ev("b.x"))))
    assert parse_norm("((true))") == Literal(True)


def test_chains_are_flat_and_keep_order() -> None:
    expr = parse_trigger("event:a.x && event:b.x && event:c.x")
    assert isinstance(expr, And)
    assert [a.pattern for a in atoms(expr) if isinstance(a, EventAtom)] == ["a.x", "b.x", "c.x"]
    assert len(expr.operands) == 3


def test_columns_of_nested_nodes() -> None:
    expr = parse_trigger("event:a.x || !event:b.x")
    assert expr == Or((EventAtom("a.x", 0), Not(EventAtom("b.x", 14), 13)), 0)


# ---------------------------------------------------------------------------
# Printing


@pytest.mark.parametrize(
    "text",
    [
        "event:a.completed",
        "event:a.x || event:b.x && event:c.x",
        "(event:a.x || event:b.x) && event:c.x",
        "!(event:a.x && event:b.x) || !event:c.x",
        "!(event:a.x || false) && {{ a.v > 1 }}",
        "{{ settled(a, b) and any_ok(a, b) }} || event:external.go",
        "!!true",
    ],
)
def test_to_source_round_trip(text: str) -> None:
    expr = parse_trigger(text)
    printed = to_source(expr)
    assert parse_norm(printed) == normalise(expr)
    # Printing is a fixed point after one pass.
    assert to_source(parse_trigger(printed)) == printed


def test_to_source_parenthesises_or_under_and_and_not() -> None:
    assert to_source(And((Or((ev("a.x"), ev("b.x"))), ev("c.x")))) == (
        "(event:a.x || event:b.x) && event:c.x"
    )
    assert to_source(Not(Or((ev("a.x"), ev("b.x"))))) == "!(event:a.x || event:b.x)"
    assert to_source(Not(And((ev("a.x"), ev("b.x"))))) == "!(event:a.x && event:b.x)"
    assert to_source(Not(ev("a.x"))) == "!event:a.x"


# ---------------------------------------------------------------------------
# Errors: the right column and a message that says what to write instead


@pytest.mark.parametrize("text", ["", "   ", "\t\n"])
def test_empty_expression(text: str) -> None:
    err = syntax_error(text)
    assert err.column == 0
    assert "empty expression" in err.message


def test_trailing_and() -> None:
    text = "event:a.completed &&"
    err = syntax_error(text)
    assert err.column == len(text)
    assert "found the end" in err.message
    assert "event:..." in err.message


def test_double_operator_points_at_the_second() -> None:
    err = syntax_error("event:a.completed && && true")
    assert err.column == 21
    assert "'&&'" in err.message


def test_unknown_word() -> None:
    err = syntax_error("event:a.completed && foo")
    assert err.column == 21
    assert "'foo'" in err.message
    assert "event:foo.completed" in err.message  # tells the user what to write
    assert str(err).startswith("column 22: ")  # str() is 1-based for humans


def test_unclosed_condition() -> None:
    err = syntax_error("event:a.completed && {{ a.x > 1")
    assert err.column == 21
    assert "never closed" in err.message
    assert "}}" in err.message


def test_empty_condition() -> None:
    err = syntax_error("true && {{   }}")
    assert err.column == 8
    assert "empty condition" in err.message


def test_unclosed_parenthesis() -> None:
    text = "true && (event:a.completed || false"
    err = syntax_error(text)
    assert err.column == len(text)
    assert "expected ')'" in err.message
    assert "column 9" in err.message  # names where the '(' was opened (1-based)


@pytest.mark.parametrize(
    ("text", "column"), [("event:", 6), ("true && event:", 14), ("event: a.completed", 6)]
)
def test_event_without_pattern(text: str, column: int) -> None:
    err = syntax_error(text)
    assert err.column == column
    assert "must be followed by a pattern" in err.message


def test_pattern_without_dot() -> None:
    err = syntax_error("true || event:extract")
    assert err.column == 14
    assert "'extract'" in err.message
    assert "extract.completed" in err.message


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        (")", 0, "found ')'"),
        ("event:a.completed)", 17, "unexpected ')'"),
        ("(true))", 6, "unexpected ')'"),
    ],
)
def test_stray_closing_parenthesis(text: str, column: int, fragment: str) -> None:
    err = syntax_error(text)
    assert err.column == column
    assert fragment in err.message


def test_unexpected_character() -> None:
    err = syntax_error("true & false")
    assert err.column == 5
    assert "'&'" in err.message


def test_missing_operator_between_atoms() -> None:
    err = syntax_error("event:a.completed event:b.completed")
    assert err.column == 18
    assert "expected '&&', '||' or the end" in err.message


# ---------------------------------------------------------------------------
# Properties

PATTERNS = (
    "a.completed",
    "b.failed",
    "shard_*.done",
    "n?.x",
    "pipeline.started",
    "external.go",
    "[ab]_1.custom-event",
)
CONDITIONS = (
    "a.x > 1",
    "b.name == 'x'",
    "settled(a, b) and any_ok(a, b)",
    "events('shard_*.done') | length >= 3",
    "a.v in [1, 2]",
    "a.s == '}} || event:x.y'",
)

leaf_exprs: st.SearchStrategy[Expr] = st.one_of(
    st.sampled_from(PATTERNS).map(EventAtom),
    st.sampled_from(CONDITIONS).map(ConditionAtom),
    st.booleans().map(Literal),
)


def _extend(children: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    many = st.lists(children, min_size=2, max_size=4).map(tuple)
    return st.one_of(children.map(Not), many.map(And), many.map(Or))


exprs: st.SearchStrategy[Expr] = st.recursive(leaf_exprs, _extend, max_leaves=12)


@settings(max_examples=200, deadline=None)
@given(exprs)
def test_print_then_parse_is_identity(expr: Expr) -> None:
    text = to_source(expr)
    assert parse_norm(text) == normalise(expr), text


def _check_only_syntax_errors(text: str) -> None:
    """Parse `text`; any exception other than ExpressionSyntaxError propagates and fails."""
    error: ExpressionSyntaxError | None = None
    try:
        parse_trigger(text)
    except ExpressionSyntaxError as exc:
        error = exc
    if error is not None:
        assert 0 <= error.column <= len(text), (text, error.column)
        assert error.message
        assert str(error).startswith(f"column {error.column + 1}: ")


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_arbitrary_text_raises_only_syntax_errors(text: str) -> None:
    _check_only_syntax_errors(text)


TOKENS = (
    "event:",
    "a.completed",
    "shard_*",
    ".",
    "&&",
    "||",
    "&",
    "|",
    "!",
    "(",
    ")",
    "{{",
    "}}",
    " a.x > 1 ",
    "'",
    '"',
    "\\",
    "true",
    "false",
    "foo",
    " ",
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=15).map("".join))
def test_token_soup_raises_only_syntax_errors(text: str) -> None:
    _check_only_syntax_errors(text)


@pytest.mark.parametrize("text", ["!" * 20000 + "true", "(" * 20000 + "true" + ")" * 20000])
def test_deep_nesting_is_a_syntax_error(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match="nests deeper"):
        parse_trigger(text)


def test_a_dict_literal_does_not_close_a_condition() -> None:
    expr = parse_trigger("{{ x.y in {'a': {'b': 1}} }} && event:x.completed")
    assert isinstance(expr, And)
    assert expr.operands[0] == ConditionAtom("x.y in {'a': {'b': 1}}", 0)
