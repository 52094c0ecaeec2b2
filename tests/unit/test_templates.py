"""The one template sandbox (DESIGN.md §4, §6, §10): escapes refused, values kept native."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from whenflow.dsl.templates import (
    Missing,
    Namespace,
    TemplateEvaluationError,
    TemplateSafetyError,
    TemplateSyntaxProblem,
    analyze_expression,
    analyze_template,
    compile_condition,
    compile_template,
)


def pool(**nodes: Mapping[str, Any]) -> dict[str, Any]:
    """A template context shaped like the variable pool's: one Namespace per node."""
    return {name: Namespace(name, values) for name, values in nodes.items()}


CTX = pool(a={"s": "{{ 7*7 }}", "n": 3, "l": [1, 2, {"k": "v"}], "d": {"x": 1}, "f": 1.5})

# ---------------------------------------------------------------------------
# Sandbox escapes are refused at load time


@pytest.mark.parametrize(
    "text",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ x|attr('__class__') }}",
        "{{ x['__class__'] }}",
        "{% include 'x' %}",
        "{% import 'x' as y %}",
        "{% from 'x' import y %}",
        "{% extends 'x' %}",
        "{{ x|attr('upper') }}",
        "{{ x['__cl' ~ 'ass__'] }}",
        "{{ (x|map(attribute='__class__'))|list }}",
        "{% for k in x %}{{ k.__class__ }}{% endfor %}",
        "text {{ a.b }} then {{ ''.__class__ }}",
        "{{ _private }}",
    ],
)
def test_escape_attempts_are_rejected(text: str) -> None:
    with pytest.raises(TemplateSafetyError):
        analyze_template(text)
    with pytest.raises(TemplateSafetyError):
        compile_template(text)


def test_safety_message_names_the_offending_part() -> None:
    with pytest.raises(TemplateSafetyError, match=r"__globals__|__init__"):
        analyze_template("{{ cycler.__init__.__globals__ }}")
    with pytest.raises(TemplateSafetyError, match="attr"):
        analyze_template("{{ x|attr('y') }}")
    with pytest.raises(TemplateSafetyError, match="include"):
        analyze_template("{% include 'x' %}")


def test_conditions_are_checked_too() -> None:
    with pytest.raises(TemplateSafetyError):
        analyze_expression("''.__class__.__mro__")


def test_syntax_error_has_a_line() -> None:
    with pytest.raises(TemplateSyntaxProblem) as info:
        analyze_template("{{ a. }}")
    assert info.value.lineno == 1


def test_environment_has_no_globals() -> None:
    # `cycler`, `range`, `lipsum` and friends are gone: unknown names stay missing.
    value = compile_template("{{ cycler }}").evaluate({})
    assert isinstance(value, Missing)
    with pytest.raises(TemplateEvaluationError):
        compile_condition("range(3) | list").evaluate({})


# ---------------------------------------------------------------------------
# Rendering happens once: a value that contains `{{` stays text


def test_value_containing_template_stays_literal_native() -> None:
    assert compile_template("{{ a.s }}").evaluate(CTX) == "{{ 7*7 }}"


def test_value_containing_template_stays_literal_in_text() -> None:
    assert compile_template("x={{ a.s }}").evaluate(CTX) == "x={{ 7*7 }}"


def test_value_containing_template_stays_literal_through_an_expression() -> None:
    assert compile_template("{{ a.s ~ '!' }}").evaluate(CTX) == "{{ 7*7 }}!"


def test_literal_text_is_returned_as_is() -> None:
    compiled = compile_template("just text")
    assert compiled.info.kind == "literal"
    assert compiled.evaluate(CTX) == "just text"


# ---------------------------------------------------------------------------
# Plain references: the fast path, native values


@pytest.mark.parametrize(
    ("text", "path", "value"),
    [
        ("{{ a.n }}", ("a", "n"), 3),
        ("{{a.l}}", ("a", "l"), [1, 2, {"k": "v"}]),
        ("  {{ a.l[2].k }} ", ("a", "l", 2, "k"), "v"),
        ("{{ a['d'].x }}", ("a", "d", "x"), 1),
        ("{{ a.f }}", ("a", "f"), 1.5),
    ],
)
def test_plain_reference_is_a_path_lookup(
    text: str, path: tuple[str | int, ...], value: Any
) -> None:
    compiled = compile_template(text)
    assert compiled.info.kind == "expression"
    assert compiled.info.path == path
    result = compiled.evaluate(CTX)
    assert result == value
    assert type(result) is type(value)


def test_plain_reference_returns_the_pool_object() -> None:
    # The fast path never copies or stringifies: a list stays the same list.
    values: dict[str, Any] = {"l": [1, 2]}
    assert compile_template("{{ a.l }}").evaluate(pool(a=values)) is values["l"]


def test_computed_expression_is_compiled_and_native() -> None:
    compiled = compile_template("{{ a.n + 1 }}")
    assert compiled.info.path is None
    result = compiled.evaluate(CTX)
    assert result == 4
    assert type(result) is int
    assert compile_template("{{ a.l | length }}").evaluate(CTX) == 3


def test_text_template_renders_a_string() -> None:
    compiled = compile_template("n={{ a.n }} l={{ a.l[0] }}")
    assert compiled.info.kind == "text"
    assert compiled.evaluate(CTX) == "n=3 l=1"


def test_output_named_like_a_dict_method_is_found() -> None:
    ctx = pool(a={"items": [1], "keys": "k"})
    assert compile_template("{{ a.items }}").evaluate(ctx) == [1]
    assert compile_condition("a.keys == 'k'").evaluate(ctx) is True


def test_a_dict_key_named_like_a_method_wins_on_both_paths() -> None:
    """The fast path and Jinja agree: in pool data, a key shadows a dict method."""
    ctx = pool(a={"d": {"items": [1, 2], "values": "v"}, "e": {"n": 1}})
    fast = compile_template("{{ a.d.items }}")
    assert fast.info.path is not None
    assert fast.evaluate(ctx) == [1, 2]
    assert compile_template("{{ a.d.items | length }}").evaluate(ctx) == 2
    assert compile_condition("a.d.values == 'v'").evaluate(ctx) is True
    # Without such a key the value is missing: a method is never data.
    assert isinstance(compile_template("{{ a.e.items }}").evaluate(ctx), Missing)
    assert isinstance(compile_template("{{ a.e.nope }}").evaluate(ctx), Missing)
    with pytest.raises(TemplateEvaluationError, match="reads a method, not data"):
        compile_template("{{ a.e.items if true else 0 }}").evaluate(ctx)
    # Calling it is still fine.
    assert compile_template("{{ a.e.items() | list }}").evaluate(ctx) == [("n", 1)]


# ---------------------------------------------------------------------------
# Missing values


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("a.zz > 1", False),
        ("a.zz < 1", False),
        ("a.zz >= 0", False),
        ("a.zz <= 0", False),
        ("a.zz == 1", False),
        ("a.zz == a.zz", False),
        ("a.zz != 1", True),
        ("a.zz is defined", False),
        ("a.zz is undefined", True),
        ("not a.zz", True),
        ("a.zz.deeper == 1", False),
        ("nope.x > 1", False),
        ("a.zz or 'fallback'", "fallback"),
    ],
)
def test_missing_semantics(condition: str, expected: Any) -> None:
    assert compile_condition(condition).evaluate(CTX) == expected


def test_missing_through_fast_path_is_falsy_missing() -> None:
    compiled = compile_template("{{ a.zz }}")
    assert compiled.info.path == ("a", "zz")
    value = compiled.evaluate(CTX)
    assert isinstance(value, Missing)
    assert not value
    assert isinstance(compile_template("{{ nope.x.y }}").evaluate(CTX), Missing)
    assert isinstance(compile_template("{{ a.l[9] }}").evaluate(CTX), Missing)


def test_rendering_missing_as_text_raises_with_the_template() -> None:
    with pytest.raises(TemplateEvaluationError) as info:
        compile_template("x={{ a.zz }}").evaluate(CTX)
    assert "x={{ a.zz }}" in str(info.value)
    assert "missing" in str(info.value)
    assert info.value.source == "x={{ a.zz }}"


def test_computing_with_missing_raises_with_the_expression() -> None:
    with pytest.raises(TemplateEvaluationError) as info:
        compile_condition("a.zz + 1").evaluate(CTX)
    assert "{{ a.zz + 1 }}" in str(info.value)


def test_runtime_type_error_names_the_expression() -> None:
    with pytest.raises(TemplateEvaluationError, match=r"a\.s \+ 1"):
        compile_condition("a.s + 1").evaluate(CTX)


# ---------------------------------------------------------------------------
# Analysis


def test_analysis_reports_names_read() -> None:
    info = analyze_template("{{ extract.rows > 0 and pipeline.input.x == other.y }}")
    assert info.names == {"extract", "pipeline", "other"}


def test_analysis_ignores_names_bound_inside_the_template() -> None:
    info = analyze_template("{% for r in extract.rows %}{{ r.id }}{% endfor %}")
    assert info.kind == "text"
    assert info.names == {"extract"}


def test_analysis_reports_event_patterns() -> None:
    info = analyze_expression("events('shard_*.done') | length >= 3 and events('x.y')")
    assert info.event_patterns == ("shard_*.done", "x.y")
    assert info.names == {"events"}
    assert info.dynamic_events is False


def test_analysis_flags_dynamic_event_patterns() -> None:
    assert analyze_expression("events(a.pattern) | length > 0").dynamic_events is True


def test_analysis_of_helpers() -> None:
    info = analyze_expression("settled(a, b) and any_ok(a, b)")
    assert info.names == {"settled", "any_ok", "a", "b"}
    assert info.path is None


def test_compile_template_is_cached_by_text() -> None:
    first = compile_template("{{ a.n * 2 }}")
    assert compile_template("{{ a.n * 2 }}") is first
    assert compile_condition("a.n * 2") is first
    assert compile_template("{{ a.n * 3 }}") is not first


@pytest.mark.parametrize(
    "expression",
    ["{{ a.n ** 30000000 > 5 }}", "{{ a.s * 200000000 }}", "{{ [a.n] * 5000000 }}"],
)
def test_evaluation_is_bounded_in_time_and_size(expression: str) -> None:
    from whenflow.dsl.templates import Namespace, TemplateEvaluationError, compile_template

    context = {"a": Namespace("a", {"n": 7, "s": "ab"})}
    with pytest.raises(TemplateEvaluationError, match="limit"):
        compile_template(expression).evaluate(context)


def test_ordinary_arithmetic_is_not_bounded() -> None:
    from whenflow.dsl.templates import Namespace, compile_template

    context = {"a": Namespace("a", {"n": 7, "s": "ab"})}
    assert compile_template("{{ a.n ** 3 }}").evaluate(context) == 343
    assert compile_template("{{ a.s * 3 }}").evaluate(context) == "ababab"


def test_projection_cannot_reach_private_fields() -> None:
    from whenflow.dsl.templates import TemplateSafetyError, TemplateSyntaxProblem, analyze_template

    # Never rewritten (the field must be a public name), so Jinja rejects the `[*]`.
    with pytest.raises((TemplateSafetyError, TemplateSyntaxProblem)):
        analyze_template("{{ a.results[*].__class__ }}")
