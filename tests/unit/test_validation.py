"""Static validation of pipelines (DESIGN.md §2, §4, §10): located, explained errors.

Every pipeline here is written so that the expected `p.yaml:LINE:COL:` can be
checked by eye: `HEADER` takes five lines, so the first node item is line 6.
"""

from __future__ import annotations

from typing import Any

import pytest

from whenflow.backends.local import LocalRunner
from whenflow.domain.errors import DefinitionErrors
from whenflow.dsl.load import load_program_text
from whenflow.dsl.program import PipelineProgram, TaskChecker
from whenflow.executors.registry import default_registry
from whenflow.testing import InlineRunner

HEADER = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: p}
spec:
  nodes:
"""


def _extract(**_: Any) -> dict[str, Any]:
    return {"rows": 1}


RUNNER = InlineRunner({"tasks:extract": _extract})
# InlineRunner knows only noop and python; shell cases use the real local runner.
SHELL_AWARE = LocalRunner(default_registry())


def load(nodes: str, extra: str = "", checker: TaskChecker = RUNNER) -> PipelineProgram:
    return load_program_text(HEADER + nodes + extra, checker, path="p.yaml")


def issues(nodes: str, extra: str = "", checker: TaskChecker = RUNNER) -> list[str]:
    with pytest.raises(DefinitionErrors) as info:
        load(nodes, extra, checker)
    return [str(issue) for issue in info.value.issues]


def the_issue(nodes: str, extra: str = "", checker: TaskChecker = RUNNER) -> str:
    found = issues(nodes, extra, checker)
    assert len(found) == 1, found
    return found[0]


def column_in_line(nodes: str, line: int, needle: str) -> int:
    """1-based column of `needle` in file line `line` (HEADER included)."""
    text = (HEADER + nodes).splitlines()[line - 1]
    return text.index(needle) + 1


# ---------------------------------------------------------------------------
# Unknown nodes and syntax errors inside expressions point at the column


def test_unknown_node_in_event_atom() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: "event:a.completed && event:nope.completed"
      task: {type: noop}
"""
    col = column_in_line(nodes, 9, "event:nope")
    issue = the_issue(nodes)
    assert issue.startswith(f"p.yaml:9:{col}: ")
    assert col == 40
    assert "nodes.b.startWhen" in issue
    assert "unknown node 'nope'" in issue


def test_unknown_node_in_condition_atom() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: "event:a.completed && {{ nope.x > 1 }}"
      task: {type: noop}
"""
    col = column_in_line(nodes, 9, "{{ nope")
    issue = the_issue(nodes)
    assert issue.startswith(f"p.yaml:9:{col}: ")
    assert "unknown node 'nope'" in issue


def test_unknown_node_suggests_a_close_match() -> None:
    nodes = """\
    - id: extract
      task: {type: noop}
    - id: b
      task: {type: noop}
      inputBindings: {x: "{{ extrct.rows }}"}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:10:26: ")
    assert "did you mean 'extract'?" in issue


def test_unknown_node_in_a_single_quoted_expression_with_escapes() -> None:
    # '' is one character of the value but two of the source.
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: '{{ a.s == ''x'' }} && event:nope.done'
      task: {type: noop}
"""
    col = column_in_line(nodes, 9, "event:nope")
    assert the_issue(nodes).startswith(f"p.yaml:9:{col}: ")


def test_syntax_error_in_start_when() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: "event:a.completed && && true"
      task: {type: noop}
"""
    col = column_in_line(nodes, 9, "&& true")
    issue = the_issue(nodes)
    assert issue.startswith(f"p.yaml:9:{col}: ")
    assert "syntax error" in issue
    assert "'&&'" in issue


def test_syntax_error_in_a_literal_block() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: |
        event:a.completed
          && foo
      task: {type: noop}
"""
    col = column_in_line(nodes, 11, "foo")
    issue = the_issue(nodes)
    assert issue.startswith(f"p.yaml:11:{col}: ")
    assert "'foo'" in issue


# ---------------------------------------------------------------------------
# Signatures


def test_binding_to_an_undeclared_input() -> None:
    nodes = """\
    - id: a
      task: {type: noop, inputs: {a: {type: string}}}
      inputBindings:
        a: x
        zz: y
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:10:13: ")
    assert "nodes.a.inputBindings.zz" in issue
    assert "declares no input 'zz' (declared: a)" in issue


def test_required_input_not_bound() -> None:
    nodes = """\
    - id: a
      task: {type: noop, inputs: {a: {type: string, required: true}}}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:6:7: ")
    assert "required input 'a' (string) is not bound" in issue


# ---------------------------------------------------------------------------
# Sandbox escapes are validation errors, wherever the template stands

ESCAPES = ["{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}"]


@pytest.mark.parametrize("escape", ESCAPES)
def test_escape_in_start_when(escape: str) -> None:
    nodes = f"""\
    - id: a
      task: {{type: noop}}
    - id: c
      startWhen: "event:a.completed || {escape}"
      task: {{type: noop}}
"""
    col = column_in_line(nodes, 9, "{{")
    issue = the_issue(nodes)
    assert issue.startswith(f"p.yaml:9:{col}: ")
    assert "is not allowed" in issue


@pytest.mark.parametrize("escape", ESCAPES)
def test_escape_in_pipeline_output(escape: str) -> None:
    nodes = """\
    - id: a
      task: {type: noop}
"""
    outputs = f"""\
  outputs:
    o: "{escape}"
"""
    issue = the_issue(nodes, outputs)
    assert issue.startswith("p.yaml:9:8: ")
    assert "spec.outputs.o" in issue
    assert "is not allowed" in issue


@pytest.mark.parametrize(
    ("where", "expected_prefix", "field"),
    [
        ("binding", "p.yaml:9:12: ", "nodes.a.inputBindings.x"),
        ("command", "p.yaml:7:45: ", "nodes.a.task.command.1"),
    ],
)
@pytest.mark.parametrize("escape", ESCAPES)
def test_escape_in_binding_or_shell_command(
    escape: str, where: str, expected_prefix: str, field: str
) -> None:
    if where == "binding":
        nodes = f"""\
    - id: a
      task: {{type: noop}}
      inputBindings:
        x: "{escape}"
"""
    else:
        nodes = f"""\
    - id: a
      task: {{type: shell, command: ["echo", "{escape}"]}}
"""
    issue = the_issue(nodes, checker=SHELL_AWARE)
    assert issue.startswith(expected_prefix)
    assert field in issue
    assert "is not allowed" in issue


# ---------------------------------------------------------------------------
# Waiting for what is read, cycles, names


def test_explicit_start_when_must_wait_for_what_bindings_read() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      startWhen: "event:pipeline.started"
      task: {type: noop}
      inputBindings: {x: "{{ a.y }}"}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:9:18: ")
    assert "reads 'a'" in issue
    assert "add event:a.completed" in issue


@pytest.mark.parametrize(
    "start_when",
    [
        "event:a.completed",
        "event:a.failed || event:a.completed",
        "{{ settled(a) }}",
        "{{ a.rows > 0 }}",
    ],
)
def test_explicit_start_when_that_waits_is_fine(start_when: str) -> None:
    nodes = f"""\
    - id: a
      task: {{type: noop}}
    - id: b
      startWhen: "{start_when}"
      task: {{type: noop}}
      inputBindings: {{x: "{{{{ a.y }}}}"}}
"""
    program = load(nodes)
    assert program.by_id["b"].reads == {"a"}


def test_or_of_an_unrelated_event_does_not_count_as_waiting() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: b
      task: {type: noop}
    - id: c
      startWhen: "event:a.completed || event:b.completed"
      task: {type: noop}
      inputBindings: {x: "{{ a.y }}"}
"""
    assert "reads 'a'" in the_issue(nodes)


def test_mutual_waits_in_explicit_triggers() -> None:
    nodes = """\
    - id: a
      startWhen: "event:b.completed"
      task: {type: noop}
    - id: b
      startWhen: "event:a.completed"
      task: {type: noop}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:7:18: ")
    assert "wait for each other" in issue
    assert "a -> b -> a" in issue


def test_mutual_waits_through_bindings() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
      inputBindings: {x: "{{ b.y }}"}
    - id: b
      task: {type: noop}
      inputBindings: {x: "{{ a.y }}"}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:6:7: ")
    assert "a -> b -> a" in issue


def reversed_chain(depth: int) -> str:
    """n{depth-1} reads n{depth-2} ... n1 reads n0, listed last-first; n0 is left out."""
    return "".join(
        f"    - {{id: n{i}, task: {{type: noop}}, inputBindings: {{x: '{{{{ n{i - 1}.y }}}}'}}}}\n"
        for i in range(depth - 1, 0, -1)
    )


def test_a_chain_deeper_than_the_recursion_limit_listed_last_first_loads() -> None:
    program = load(reversed_chain(1500) + "    - {id: n0, task: {type: noop}}\n")
    assert program.by_id["n1499"].reads == {"n1498"}


def test_a_cycle_at_the_end_of_a_deep_chain_is_reported() -> None:
    last = "    - {id: n0, task: {type: noop}, inputBindings: {x: '{{ n2.y }}'}}\n"
    assert "n2 -> n1 -> n0 -> n2" in the_issue(reversed_chain(1500) + last)


def test_reading_own_outputs() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
      inputBindings: {x: "{{ a.y }}"}
"""
    assert any("cannot read its own outputs" in i for i in issues(nodes))


@pytest.mark.parametrize("reserved", ["pipeline", "system", "item", "events"])
def test_reserved_node_id(reserved: str) -> None:
    nodes = f"""\
    - id: {reserved}
      task: {{type: noop}}
"""
    found = issues(nodes)
    assert len(found) == 1, found
    assert found[0].startswith(f"p.yaml:6:11: nodes.{reserved}.id: '{reserved}' is a reserved name")


def test_unknown_task_type() -> None:
    nodes = """\
    - id: a
      task: {type: bogus}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:7:20: ")
    assert "unknown task type 'bogus'" in issue


def test_unregistered_callable() -> None:
    nodes = """\
    - id: a
      task: {type: python, callable: "tasks:nope"}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:7:13: ")
    assert "'tasks:nope'" in issue


@pytest.mark.parametrize("name", ["item", "index"])
def test_item_outside_for_each(name: str) -> None:
    nodes = f"""\
    - id: a
      task: {{type: noop}}
      inputBindings: {{x: "{{{{ {name} }}}}"}}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:8:26: ")
    assert f"'{name}' is only defined in a node with forEach" in issue


def test_item_in_a_trigger() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
      forEach: "{{ [1, 2] }}"
      startWhen: "{{ item > 1 }}"
"""
    assert "'item' is not defined in a trigger" in the_issue(nodes)


def test_several_problems_are_reported_together() -> None:
    nodes = """\
    - id: a
      task: {type: bogus}
    - id: b
      startWhen: "event:nope.completed"
      task: {type: noop}
"""
    found = issues(nodes)
    assert len(found) == 2
    assert found[0].startswith("p.yaml:7:20: ")
    assert found[1].startswith("p.yaml:9:19: ")


# ---------------------------------------------------------------------------
# Positive cases


def test_default_start_when_waits_for_every_node_read_in_definition_order() -> None:
    nodes = """\
    - id: c
      task: {type: noop}
    - id: a
      task: {type: python, callable: "tasks:extract"}
    - id: b
      task: {type: noop}
    - id: j
      task: {type: noop}
      forEach: "{{ c.files }}"
      inputBindings:
        x: "{{ b.y }}"
        y: "count={{ a.rows }}"
        z: ["{{ item }}", "{{ index }}", "{{ pipeline.input.q }}"]
    - id: solo
      task: {type: noop}
      inputBindings: {x: "{{ pipeline.input.q }}"}
"""
    program = load(nodes)
    assert program.effective_start_when("c") == "event:pipeline.started"
    assert program.effective_start_when("solo") == "event:pipeline.started"
    assert program.effective_start_when("j") == (
        "event:pipeline.started && event:c.completed && event:a.completed && event:b.completed"
    )
    assert program.by_id["j"].reads == {"a", "b", "c"}


def test_shell_command_templates_are_checked_and_waited_for() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
    - id: s
      task: {type: shell, command: ["echo", "{{ a.path }}", "{{ pipeline.input.q }}"]}
"""
    program = load(nodes, checker=SHELL_AWARE)
    assert program.effective_start_when("s") == "event:pipeline.started && event:a.completed"
    assert program.by_id["s"].reads == {"a"}
    assert set(program.by_id["s"].rendered_config) == {"command"}

    unknown = """\
    - id: s
      task: {type: shell, command: ["echo", "{{ nope.path }}"]}
"""
    issue = the_issue(unknown, checker=SHELL_AWARE)
    assert issue.startswith("p.yaml:7:45: nodes.s.task.command.1: unknown node 'nope'")


def test_valid_join_after_a_branch() -> None:
    nodes = """\
    - id: a
      task: {type: noop}
      startWhen: "{{ pipeline.input.go }}"
    - id: b
      task: {type: noop}
      startWhen: "{{ not pipeline.input.go }}"
    - id: join
      startWhen: "{{ settled(a, b) and any_ok(a, b) }}"
      task: {type: noop}
      inputBindings: {x: "{{ a.y }}", y: "{{ b.y }}"}
"""
    program = load(nodes)
    assert program.effective_start_when("join") == "{{ settled(a, b) and any_ok(a, b) }}"
    assert program.by_id["join"].reads == {"a", "b"}


def test_design_section2_example_validates() -> None:
    nodes = """\
    - id: extract_data
      task: {type: python, callable: "tasks:extract"}
      inputBindings:
        start: "{{ pipeline.input.start_date }}"
    - id: transform_data
      startWhen: "event:extract_data.completed && {{ extract_data.row_count > 0 }}"
      task: {type: noop}
      inputBindings:
        path: "{{ extract_data.output_path }}"
    - id: notify_empty
      startWhen: "event:extract_data.completed && {{ extract_data.row_count == 0 }}"
      task: {type: noop}
"""
    outputs = """\
  outputs:
    quality: "{{ transform_data.quality_score }}"
"""
    program = load(nodes, outputs)
    assert [n.id for n in program.nodes] == ["extract_data", "transform_data", "notify_empty"]
    assert program.effective_start_when("transform_data") == (
        "event:extract_data.completed && {{ extract_data.row_count > 0 }}"
    )
