"""Template evaluation is bounded in time and size, before allocating (DESIGN.md §10).

Every input here froze the dispatcher or allocated gigabytes before the bounds:
each must now fail fast with an error naming the template and the limit.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from whenflow.dsl import template_bounds
from whenflow.dsl.templates import (
    Namespace,
    TemplateEvaluationError,
    TemplateSafetyError,
    TemplateSyntaxProblem,
    analyze_template,
    compile_template,
)


def pool(**nodes: Mapping[str, Any]) -> dict[str, Any]:
    return {name: Namespace(name, values) for name, values in nodes.items()}


BIG = 1_000_000_000
CTX = pool(
    src={"s": "abc", "n": BIG, "l": list(range(2000)), "m": {"items": [1], "t": 5}},
    pipeline={"input": {"width": BIG, "n": 2000, "base": 10, "text": "ab\tcd"}},
)


@pytest.fixture(autouse=True)
def _clock_of_a_busy_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of the other bounds must not race the clock on a shared CI machine;
    the deadline's own test sets it low again."""
    monkeypatch.setattr(template_bounds, "MAX_EVALUATION_SECONDS", 30.0)


def evaluate(text: str, context: Mapping[str, Any] = CTX) -> Any:
    return compile_template(text).evaluate(context)


def refused(text: str, *words: str, context: Mapping[str, Any] = CTX) -> str:
    """Evaluate `text`, expecting a prompt TemplateEvaluationError quoting it and `words`."""
    started = time.monotonic()
    with pytest.raises(TemplateEvaluationError) as info:
        evaluate(text, context)
    assert time.monotonic() - started < 20
    message = str(info.value)
    assert text.strip("{} ") in message
    for word in words:
        assert word in message
    return message


# ---------------------------------------------------------------- callables


@pytest.mark.parametrize(
    "text",
    [
        "{{ src.s.upper }}",  # plain-reference fast path
        "{{ [src.s.upper] }}",  # inside a list
        "{{ {'k': [1, src.s.upper]} }}",  # inside a dict
        "{{ src.s.upper if true else 1 }}",
        "value: {{ src.s.upper }}",  # text: never a repr with an address
        "{{ [src.s.upper] | string }}",
        "{{ src.s.upper ~ '' }}",
    ],
)
def test_a_callable_is_never_a_value(text: str) -> None:
    refused(text, "method, not data")


def test_calling_a_method_still_works() -> None:
    assert evaluate("{{ src.s.upper() }}") == "ABC"
    assert evaluate("x{{ src.s.upper() }}") == "xABC"


def test_a_key_still_wins_over_a_method_of_its_name() -> None:
    assert evaluate("{{ src.m.items }}") == [1]


def test_an_attribute_of_an_object_on_the_fast_path_is_still_read() -> None:
    import datetime

    context = pool(a={"when": datetime.date(2024, 5, 1)})
    assert evaluate("{{ a.when.year }}", context) == 2024
    with pytest.raises(TemplateEvaluationError, match="method, not data"):
        evaluate("{{ a.when.isoformat }}", context)


# -------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("{{ 'a' | center(pipeline.input.width) }}", "center"),
        ("{{ 'a'.center(pipeline.input.width) }}", "str.center"),
        ("{{ 'a'.ljust(src.n) }}", "str.ljust"),
        ("{{ 'a'.zfill(src.n) }}", "str.zfill"),
        ("{{ ('%0' ~ src.n ~ 'd') % 1 }}", "'%'"),
        ("{{ '%0*d' % (src.n, 1) }}", "'%'"),
        ("{{ ('%0' ~ src.n ~ 'd') | format(1) }}", "'%'"),
        ("{{ src.l | slice(src.n * 100) | list | length }}", "slice"),
        ("{{ src.l | batch(src.n) | list | length }}", "batch"),
        ("{{ src.l | slice(100000) | list | length }}", "slice"),
        ("{{ ([src.s * 300000] * 1000) | sort | length }}", "16,000,000"),
        ("{{ ([src.s * 300000] * 1000) | unique | list | length }}", "16,000,000"),
        ("{{ 'a' | indent(src.n) }}", "indent"),
        ("{{ 'x x x x x' | wordwrap(5, wrapstring=src.s * 333333) }}", "wordwrap"),
        ("{{ src.s | truncate(src.n) }}", "truncate"),
        ("{{ ('{:>' ~ src.n ~ '}').format(1) }}", "format spec"),
        ("{{ '{:{}}'.format(1, src.n) }}", "format spec"),
        ("{{ '{:.{}f}'.format(1.5, src.n) }}", "format spec"),
        ("{{ ((pipeline.input.base ** 1000) ** 1000) ** 1000 > 0 }}", "MAX_INT_BITS"),
        ("{{ (pipeline.input.base ** 4000) * (pipeline.input.base ** 4000) }}", "MAX_INT_BITS"),
        ("{{ src.s * src.n }}", "'*'"),
        ("{{ [src.l] * 9000 }}", "16,000,000"),
        ("{{ ([src.l] * 600) | string }}", "1,000,000"),
        ("{{ src.l * 600 }}", "'*'"),
        ("{{ [src.s * 1000] * 6000 }}", "16,000,000"),
        ("{{ src.s * 200000 + src.s * 200000 }}", "'+'"),
        ("{{ [src.s * 100000] * 50 + [src.s * 100000] * 50 }}", "16,000,000"),
        ("{{ src.l * 300 + src.l * 300 }}", "'+'"),
        ("{{ (src.s * 333333).replace('a', 'aaaa') }}", "str.replace"),
        ("{{ (src.s * 333333) | replace('a', 'aaaa') }}", "replace"),
        ("{{ (pipeline.input.text * 100).expandtabs(src.n // 1000) }}", "expandtabs"),
        ("{{ (('x' * 1000) * 999).split('x') | join('y' * 10) }}", "join"),
        ("{{ ('y' * 10).join((('x' * 1000) * 999).split('x')) }}", "str.join"),
        ("{{ src.l | tojson(indent=1000) }}", "tojson"),
        ("{{ ('x' * 600000) ~ ('x' * 600000) }}", "'~'"),
        ("{{ (src.s * 300000) | replace('a', '\"') | e }}", "filter 'e'"),
        ("{{ ('é' * 400000) | urlencode }}", "urlencode"),
        ("{{ src.s.translate({97: 'x' * 999999}) }}", "str.translate"),
    ],
)
def test_building_a_large_value_is_refused_before_it_is_built(text: str, word: str) -> None:
    refused(text, word, "limit")


def test_the_headline_inputs_name_the_limit() -> None:
    refused("{{ 'x' | center(pipeline.input.width) }}", "1,000,000,000", "1,000,000")
    refused("{{ src.l | slice(src.n // 10) | list }}", "slice")


def test_values_under_the_limits_are_built() -> None:
    assert evaluate("{{ 2 ** 100 }}") == 2**100
    assert evaluate("{{ pipeline.input.base ** 1000 }}") == 10**1000
    assert evaluate("{{ 'ab' * 3 }}") == "ababab"
    assert evaluate("{{ [0] * 3 + [1] }}") == [0, 0, 0, 1]
    assert evaluate("{{ '%5d|%-3s|%.2f' % (3, 'a', 1.5) }}") == "    3|a  |1.50"
    assert evaluate("{{ '%(a)s' % {'a': 1} }}") == "1"
    assert evaluate("{{ '{:>5}|{:.1f}'.format('a', 2.25) }}") == "    a|2.2"
    assert evaluate("{{ 'a' | center(5) }}") == "  a  "
    assert evaluate("{{ [1, 2, 3, 4] | slice(3) | list }}") == [[1, 2], [3], [4]]
    assert evaluate("{{ ['b', 'A', 'a'] | sort }}") == ["A", "a", "b"]
    assert evaluate("{{ src.missing | default(5000000) }}") == 5000000
    assert evaluate("{{ src.m.get('zz', 3600000) }}") == 3600000
    assert evaluate("{{ [[1], [2, 3]] | sum(start=[]) }}") == [1, 2, 3]
    assert evaluate("{{ [1, 2, 3] | sum }}") == 6
    assert evaluate("{{ [{'v': 2}, {'v': 3}] | sum(attribute='v') }}") == 5
    assert evaluate("{{ src.l | map('string') | join(',') | length }}") == 8889
    assert evaluate("{{ 'a-b' | replace('-', '--') }}") == "a--b"
    assert evaluate("{{ src.s ~ 1 ~ none }}") == "abc1None"
    assert evaluate("{{ '<a>' | e }}") == "&lt;a&gt;"
    assert evaluate("{{ 'é x' | urlencode }}") == "%C3%A9%20x"


def test_a_lazy_filter_result_is_consumed_under_the_bounds() -> None:
    assert evaluate("{{ [1, 2] | map('string') }}") == ["1", "2"]
    assert evaluate("{{ [] | select }}") == []
    refused("{{ (src.s * 100000) | list | map('center', 999999) }}", "MAX_BUILT_SIZE")
    refused("{{ src.l | map('center', 999999) | list | length }}", "MAX_BUILT_SIZE")
    refused(
        "{{ (src.s * 300001) | batch(1000, fill_with=src.s * 300000) | map('upper') | list }}",
        "1,000,000",
    )
    refused(
        "{{ ([0] * 1000000) | map('default', src.s * 300000, true) | list | map('upper') | list }}",
        "MAX_BUILT_SIZE",
    )


def test_sum_of_lists_is_linear_and_keeps_pythons_type_errors() -> None:
    started = time.monotonic()
    assert evaluate("{{ ([[1]] * 100000) | sum(start=[]) | length }}") == 100000
    assert time.monotonic() - started < 5
    with pytest.raises(TemplateEvaluationError, match="TypeError"):
        evaluate("{{ [[1], (2,)] | sum(start=[]) }}")


def test_a_constant_over_a_limit_is_refused_at_load() -> None:
    for text in (
        "{{ ((10 ** 1000) ** 1000) ** 1000 > 0 }}",
        "{{ '%01000000000d' % 1 }}",
        "{{ 'x' * 1000001 }}",
        "{{ [1, 2 ** 20000] }}",
        "{{ a.s | center(10 ** 9) }}",
        "{{ a.l | slice(10 ** 8) | list }}",
        "{{ 'ab'.center(width=2 ** 40) }}",
        "{% for x in a.l %}{{ x | indent(10 ** 7) }}{% endfor %}",
    ):
        with pytest.raises(template_bounds.TemplateLimitExceeded, match="constant"):
            analyze_template(text)
    assert analyze_template("{{ 1 / 0 if a.n else 10 ** 100 }}").names == {"a"}
    assert analyze_template("{{ a.n | default(10 ** 8) }}").names == {"a"}
    assert analyze_template("{{ a.m.get('k', 10 ** 8) }}").names == {"a"}


# --------------------------------------------------------------------- time


def test_nested_loops_stop_at_the_iteration_limit() -> None:
    refused(
        "{% for a in src.l %}{% for b in src.l %}{% for c in src.l %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "MAX_LOOP_ITERATIONS",
    )


def test_a_loop_stops_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(template_bounds, "MAX_EVALUATION_SECONDS", 0.05)
    monkeypatch.setattr(template_bounds, "MAX_LOOP_ITERATIONS", 10**12)
    refused(
        "{% for a in src.l %}{% for b in src.l %}{{ a }}{% endfor %}{% endfor %}",
        "MAX_EVALUATION_SECONDS",
    )


def test_loops_with_filters_and_dicts_count_too() -> None:
    refused(
        "{% for a in src.l if a %}{% for b in src.l %}{% for c in src.l|list %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "MAX_LOOP_ITERATIONS",
    )
    refused(
        "{% for a in src.l %}{% for k, v in {'a': 1, 'b': 2}.items() %}{% for c in src.l %}"
        "{% endfor %}{% endfor %}{% endfor %}",
        "MAX_LOOP_ITERATIONS",
    )


def test_a_recursive_loop_counts_and_its_recursion_is_an_error() -> None:
    refused("{% for x in [1] recursive %}{{ loop([1]) }}{% endfor %}", "RecursionError")
    refused(
        "{% for x in src.l recursive %}{% if x is number %}"
        "{{ loop(src.l | map('string')) }}{% endif %}{% endfor %}",
        "MAX_LOOP_ITERATIONS",
    )


def test_rendered_text_is_bounded_while_it_is_emitted() -> None:
    refused(
        "{% for a in src.l %}{% for b in src.l %}0123456789{% endfor %}{% endfor %}",
        "MAX_RENDERED_CHARS",
    )
    refused(
        "{% set x %}{% for a in src.l %}{% for b in src.l %}0123{% endfor %}"
        "{% endfor %}{% endset %}{{ x | length }}",
        "MAX_RENDERED_CHARS",
    )


def test_doubling_text_through_set_is_bounded() -> None:
    doublings = "".join("{% set s = s ~ s %}" for _ in range(25))
    refused("{% set s = 'abcd' %}" + doublings + "{{ s | length }}", "'~'")


def test_loops_keep_their_features() -> None:
    text = (
        "{% for x in src.l[:3] %}{{ loop.index }}/{{ loop.length }}"
        "{% if loop.last %}!{% endif %} {% endfor %}"
    )
    assert evaluate(text) == "1/3 2/3 3/3! "
    assert evaluate("{% for x in [] %}a{% else %}empty{% endfor %}") == "empty"
    assert evaluate("{% for k in {'a': 1} %}{{ k }}{% endfor %}") == "a"
    tree = "{% for n in [{'c': [{'c': []}]}] recursive %}<{{ loop(n.c) }}>{% endfor %}"
    assert evaluate(tree) == "<<>>"


def test_internal_filters_cannot_be_named() -> None:
    for text in ("{{ x | _wf_loop }}", "{{ x is _wf_emit }}"):
        with pytest.raises(TemplateSafetyError):
            analyze_template(text)


# ----------------------------------------------------- anything else fails the template


class _Exploding(Mapping[str, Any]):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getitem__(self, key: str) -> Any:
        raise self.error

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize("error", [MemoryError(), RecursionError("deep"), RuntimeError("odd")])
@pytest.mark.parametrize("text", ["{{ a.b + 1 }}", "{{ a.b }}", "x {{ a.b }}"])
def test_any_error_while_evaluating_is_the_templates(error: BaseException, text: str) -> None:
    context = {"a": Namespace("a", _Exploding(error))}
    with pytest.raises(TemplateEvaluationError) as info:
        compile_template(text).evaluate(context)
    assert type(error).__name__ in str(info.value)
    assert "a.b" in str(info.value)


# ------------------------------------------------------------- too deep to compile


@pytest.mark.parametrize(
    "text",
    [
        "{{ " + "(" * 80 + "1" + ")" * 80 + " }}",
        "{{ " + "(" * 300 + "1" + ")" * 300 + " }}",
        "{{ " + "[" * 80 + "]" * 80 + " }}",
        "{{ " + "+".join(["1"] * 3000) + " }}",
        "{{ " + "not " * 400 + "1 }}",
        "{{ " + "-" * 2000 + "1 }}",
    ],
)
def test_a_template_too_deep_to_compile_is_a_syntax_problem(text: str) -> None:
    with pytest.raises(TemplateSyntaxProblem, match="nest"):
        compile_template(text)


def test_brackets_inside_strings_or_outside_expressions_do_not_count_as_nesting() -> None:
    text = "{{ '" + "(" * 100 + "' | length }}"
    assert evaluate(text) == 100
    assert evaluate("(" * 40 + " it's {{ src.s }} " + ")" * 40) == (
        "(" * 40 + " it's abc " + ")" * 40
    )
    assert evaluate("{{ {'a': {'b': [1]}}['a']['b'] }} {% if ([1]) %}y{% endif %}") == "[1] y"
    with pytest.raises(TemplateSyntaxProblem, match="nest"):
        compile_template("it's {% if " + "(" * 40 + "1" + ")" * 40 + " %}x{% endif %}")


# ------------------------------------------- other ways to a big number or value


@pytest.mark.parametrize(
    "text",
    [
        # Python computes 10 ** 1,000,000,000 in one uninterruptible step.
        "{{ 5 | round(0 - pipeline.input.width) }}",
        "{{ src.l | map('round', 0 - src.n) | list }}",
        "{{ 1.5 | round(pipeline.input.width, 'floor') }}",
        "{{ 1.5 | round(precision=src.n, method='ceil') }}",
    ],
)
def test_round_with_a_huge_precision_is_refused_before_it_computes(text: str) -> None:
    refused(text, "round", "MAX_INT_BITS")


def test_round_with_an_ordinary_precision_still_rounds() -> None:
    assert evaluate("{{ 1234 | round(-2) }}") == 1200
    assert evaluate("{{ 42.55 | round(1, 'floor') }}") == 42.5
    assert evaluate("{{ 2.5 | round(4000) }}") == 2.5


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("{{ 'x'.encode() * src.n }}", "'*'"),
        ("{{ src.n * src.s.encode() }}", "'*'"),
        ("{{ 'x'.encode().center(pipeline.input.width) }}", "center"),
        ("{{ 'x'.encode().ljust(src.n) }}", "ljust"),
        ("{{ 'x'.encode().zfill(src.n) }}", "zfill"),
        ("{{ (src.s * 1000).encode().replace('a'.encode(), ('b' * 999999).encode()) }}", "replace"),
        ("{{ ('%0' ~ src.n ~ 'd').encode() % 1 }}", "'%'"),
        ("{{ (0).to_bytes(src.n, 'big') }}", "to_bytes"),
        ("{{ (src.s * 200000).encode() + (src.s * 200000).encode() }}", "'+'"),
    ],
)
def test_bytes_are_bounded_as_text_is(text: str, word: str) -> None:
    refused(text, word, "limit")


def test_bytes_under_the_limits_are_built() -> None:
    assert evaluate("{{ ('ab'.encode() * 2).center(6) }}") == b" abab "
    assert evaluate("{{ (1).to_bytes(2, 'big') }}") == b"\x00\x01"


@pytest.mark.parametrize(
    "text",
    [
        "{{ not src.s.isdigit }}",  # was False: the method's truth decided it
        "{{ src.s.isdigit and 1 }}",
        "{{ 'y' if src.s.isdigit else 'n' }}",
        "{{ src.s.upper == 'ABC' }}",
        "{{ src.s['upper'] is defined }}",
        "{% if src.s.isdigit %}digits{% endif %}",
    ],
)
def test_a_method_never_decides_a_truth_value_or_a_comparison(text: str) -> None:
    refused(text, "method, not data")


def test_reads_that_are_called_or_data_still_work() -> None:
    assert evaluate("{{ not src.s.isdigit() }}") is True
    assert evaluate("{{ src.m['items'] and src.m.t == 5 }}") is True
    assert evaluate("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}{% endfor %}") == "ab"
    assert evaluate("{{ src.l[1:3] }}") == [1, 2]
    assert evaluate("{{ '{}-{}'.format(src.s, src.n) }}") == "abc-1000000000"


def test_an_iterator_or_a_dict_view_is_consumed_into_a_list() -> None:
    # `reverse` returns an iterator and `keys()` a view: a task got the object, a
    # shell task its repr (`<list_reverseiterator object at 0x...>`).
    assert evaluate("{{ src.l[:3] | reverse }}") == [2, 1, 0]
    assert evaluate("{{ {'a': 1, 'b': 2}.keys() }}") == ["a", "b"]
    assert evaluate("{{ {'a': 1}.items() }}") == [("a", 1)]
    refused("{{ ([src.s * 300000] * 60) | reverse }}", "16,000,000")


@pytest.mark.parametrize(
    "text",
    [
        "{{ ['1', 'a'] | selectattr('isdigit') | list }}",  # was ['1', 'a']: a method is true
        "{{ src.l | map('string') | rejectattr('isdigit') | list | length }}",  # was 0
        "{{ ['b', 'a'] | sort(attribute='upper') }}",
        "{{ ['b', 'a'] | map(attribute='upper') | list | length }}",
    ],
)
def test_a_method_named_by_a_filter_never_selects_or_sorts(text: str) -> None:
    refused(text, "method, not data")


def test_filters_naming_keys_still_work() -> None:
    rows = "[{'v': 2, 'k': 'b'}, {'v': 0, 'k': 'a'}]"
    assert evaluate("{{ " + rows + " | selectattr('v') | map(attribute='k') | list }}") == ["b"]
    assert evaluate("{{ " + rows + " | sort(attribute='k') | map(attribute='v') | list }}") == [
        0,
        2,
    ]
    assert evaluate("{{ src.m['t'] }}") == 5
