"""Load-time checks of what expressions read and which events can happen (DESIGN.md §4, §5).

Issue 13 items 8 (reads that do not wait), 9 (typos in event names, catch-all
globs, every problem at once), 16 (templates in interpreter code) and 18
(shell input names that collide).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from whenflow.backends.local import LocalRunner
from whenflow.domain.definitions import TaskSignature, TaskSpec
from whenflow.domain.errors import DefinitionErrors
from whenflow.dsl.listeners import external_names, listens_for
from whenflow.dsl.load import load_program_file, load_program_text
from whenflow.dsl.program import PipelineProgram, SignatureResolver
from whenflow.executors.registry import default_registry
from whenflow.executors.task_decorator import build_definition
from whenflow.testing import InlineRunner

HEADER = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: p}
spec:
  nodes:
"""


def _ticker(ctx: Any) -> dict[str, Any]:
    return {}


TICKER_DEFINITION, _ = build_definition(_ticker, emits=["tick", "price_changed"])
RUNNER = InlineRunner({"ticker": _ticker, "plain": _ticker})
SHELL_AWARE = LocalRunner(default_registry())


def _signatures(task: TaskSpec) -> TaskSignature | None:
    return TICKER_DEFINITION.task.signature if task.config.get("callable") == "ticker" else None


def load(
    nodes: str,
    runner: Any = RUNNER,
    resolve: SignatureResolver | None = _signatures,
) -> PipelineProgram:
    return load_program_text(HEADER + nodes, runner, path="p.yaml", resolve_signature=resolve)


def issues(nodes: str, runner: Any = RUNNER) -> list[str]:
    with pytest.raises(DefinitionErrors) as info:
        load(nodes, runner)
    return [str(issue) for issue in info.value.issues]


def the_issue(nodes: str, runner: Any = RUNNER) -> str:
    found = issues(nodes, runner)
    assert len(found) == 1, found
    return found[0]


# --------------------------------------------------------------------------- item 8


def test_a_binding_counting_events_waits_for_the_emitter_by_default() -> None:
    program = load("""\
    - id: feed
      emits: [tick]
      task: {type: noop}
    - id: count
      task: {type: noop}
      inputBindings: {n: "{{ events('feed.tick') | length }}"}
""")
    assert program.effective_start_when("count") == (
        "event:pipeline.started && event:feed.completed"
    )
    assert program.by_id["count"].reads == {"feed"}


@pytest.mark.parametrize(
    ("binding", "waits_for"),
    [
        ("{{ settled(a) }}", ["a"]),
        ("{{ any_ok('a', 'b') }}", ["a", "b"]),
        ("{{ events('*.completed') | length }}", ["a", "b"]),
        ("{{ 'x' if events('b.started') else 'y' }}", ["b"]),
    ],
)
def test_every_way_a_binding_reads_a_node_makes_it_wait(binding: str, waits_for: list[str]) -> None:
    program = load(f"""\
    - {{id: a, task: {{type: noop}}}}
    - {{id: b, task: {{type: noop}}}}
    - id: c
      task: {{type: noop}}
      inputBindings: {{v: "{binding}"}}
""")
    expected = " && ".join(["event:pipeline.started", *(f"event:{n}.completed" for n in waits_for)])
    assert program.effective_start_when("c") == expected


def test_for_each_over_events_waits_for_their_source() -> None:
    program = load("""\
    - id: feed
      emits: [tick]
      task: {type: noop}
    - id: each
      forEach: "{{ events('feed.tick') }}"
      task: {type: noop}
""")
    assert program.effective_start_when("each") == "event:pipeline.started && event:feed.completed"


def test_an_explicit_start_when_must_wait_for_the_events_a_binding_counts() -> None:
    issue = the_issue("""\
    - id: feed
      emits: [tick]
      task: {type: noop}
    - id: count
      startWhen: "event:feed.started"
      task: {type: noop}
      inputBindings: {n: "{{ events('feed.tick') | length }}"}
""")
    assert issue.startswith("p.yaml:10:")
    assert "reads 'feed' but startWhen can be true before 'feed' has finished" in issue


def test_an_explicit_start_when_that_settles_the_emitter_is_fine() -> None:
    program = load("""\
    - id: feed
      emits: [tick]
      task: {type: noop}
    - id: count
      startWhen: "{{ settled(feed) }}"
      task: {type: noop}
      inputBindings: {n: "{{ events('feed.tick') | length }}"}
""")
    assert program.by_id["count"].reads == {"feed"}


# --------------------------------------------------------------------------- item 9: names


def test_a_misspelt_lifecycle_event_is_an_error_with_a_suggestion() -> None:
    nodes = """\
    - {id: extract, task: {type: noop}}
    - id: load
      startWhen: "event:extract.complete"
      task: {type: noop}
"""
    issue = the_issue(nodes)
    assert issue.startswith("p.yaml:8:19: nodes.load.startWhen: ")
    assert "event:extract.complete can never happen" in issue
    assert "did you mean extract.completed?" in issue


@pytest.mark.parametrize(
    ("where", "pattern", "suggestion"),
    [
        ("startWhen", "event:extract.faild", "extract.failed"),
        ("stopWhen", "event:feed.tik", "feed.tick"),
        ("startWhen", "event:pipeline.complete", "pipeline.completed"),
        ("startWhen", "{{ events('feed.tickk') | length > 2 }}", "feed.tick"),
    ],
)
def test_other_misspelt_events_in_triggers(where: str, pattern: str, suggestion: str) -> None:
    issue = the_issue(f"""\
    - {{id: extract, task: {{type: noop}}}}
    - {{id: feed, emits: [tick], task: {{type: noop}}}}
    - id: load
      {where}: "{pattern}"
      task: {{type: noop}}
""")
    assert f"did you mean {suggestion}?" in issue


def test_a_misspelt_event_in_a_binding_is_an_error() -> None:
    issue = the_issue("""\
    - {id: feed, emits: [tick], task: {type: noop}}
    - id: count
      task: {type: noop}
      inputBindings: {n: "{{ events('feed.ticks') | length }}"}
""")
    assert "nodes.count.inputBindings.n: events('feed.ticks')" in issue
    assert "did you mean feed.tick?" in issue


def test_an_undeclared_custom_event_is_an_error() -> None:
    issue = the_issue("""\
    - {id: train, task: {type: noop}}
    - {id: watch, startWhen: "event:train.epoch_done", task: {type: noop}}
""")
    assert "'train' never publishes 'epoch_done'" in issue
    assert "declare custom events in `emits:`" in issue


@pytest.mark.parametrize(
    ("node", "pattern"),
    [
        ("{id: a, task: {type: noop}}", "a.approved"),
        ("{id: a, task: {type: noop}}", "a.waiting"),
        ("{id: a, task: {type: noop}}", "a.item_failed"),
        ("{id: a, task: {type: noop}}", "a.child_started"),
        ("{id: a, task: {type: noop}, emits: [tick]}", "*.tock"),
    ],
)
def test_events_a_node_of_that_kind_never_publishes(node: str, pattern: str) -> None:
    issue = the_issue(f"""\
    - {node}
    - {{id: b, startWhen: "event:{pattern}", task: {{type: noop}}}}
""")
    assert f"event:{pattern} can never happen" in issue


@pytest.mark.parametrize(
    ("where", "pattern", "hint"),
    [
        ("startWhen", "event:external.Deploy", "external.deploy"),
        ("startWhen", "event:external.deploy-prod", "external.deploy_prod"),
        ("stopWhen", "event:external.abort.now", "external.abort_now"),
        ("startWhen", "{{ events('external.GO') | length > 0 }}", "external.go"),
    ],
)
def test_an_external_event_nobody_can_send_is_an_error(where: str, pattern: str, hint: str) -> None:
    # `events send` (and the inbox) take only lowercase names: the node would wait forever.
    issue = the_issue(f"""\
    - {{id: ship, {where}: "{pattern}", task: {{type: noop}}}}
""")
    assert "can never happen: an external event's name is lowercase" in issue
    assert f"(like {hint})" in issue


def test_external_events_that_can_be_sent_validate() -> None:
    load("""\
    - {id: a, startWhen: "event:external.deploy_prod", task: {type: noop}}
    - {id: b, startWhen: "event:external.deploy_*", task: {type: noop}}
""")


def test_events_declared_every_way_validate() -> None:
    text = (
        """\
apiVersion: whenflow/v1
kind: Task
metadata: {name: trainer, version: 1.0.0}
spec:
  type: noop
  emits: [epoch_done]
---
"""
        + HEADER
        + """\
    - id: train
      task: {ref: trainer@1.0.0}
    - {id: feed, task: {type: python, callable: ticker}}
    - {id: node_level, emits: [custom_one], task: {type: noop}}
    - {id: ask, task: {type: approval}}
    - {id: fan, forEach: "{{ [1, 2] }}", task: {type: noop}}
    - id: watch
      startWhen: >-
        event:train.epoch_done || event:feed.price_changed || event:node_level.custom_one
        || event:ask.approved || event:fan.item_completed || event:external.go
        || event:*.tick || event:pipeline.started
      task: {type: noop}
"""
    )
    program = load_program_text(text, RUNNER, path="p.yaml", resolve_signature=_signatures)
    assert program.by_id["train"].emits == {"epoch_done"}
    assert program.by_id["feed"].emits == {"tick", "price_changed"}
    assert program.by_id["node_level"].emits == {"custom_one"}


@pytest.mark.parametrize("name", ["completed", "Bad-Name"])
def test_emits_refuses_lifecycle_and_malformed_names(name: str) -> None:
    issue = the_issue(f"""\
    - {{id: a, emits: ["{name}"], task: {{type: noop}}}}
""")
    assert "nodes.a.emits[0]" in issue


# --------------------------------------------------------------------------- item 9: globs


@pytest.mark.parametrize("pattern", ["*.failed", "*.completed", "shard_*.failed"])
def test_a_catch_all_glob_is_not_a_cycle_with_its_own_node(pattern: str) -> None:
    program = load(f"""\
    - {{id: shard_a, task: {{type: noop}}}}
    - {{id: shard_b, task: {{type: noop}}}}
    - id: shard_handler
      startWhen: "event:{pattern}"
      task: {{type: noop}}
""")
    assert program.effective_start_when("shard_handler") == f"event:{pattern}"


@pytest.mark.parametrize("pattern", ["*.ping", "*.failed", "*.started"])
def test_a_catch_all_that_matches_only_itself_can_never_happen(pattern: str) -> None:
    issue = the_issue(f"""\
    - id: lonely
      emits: [ping]
      stopWhen: "event:{pattern}"
      task: {{type: noop}}
""")
    assert f"event:{pattern} can never happen" in issue


def test_a_real_cycle_through_a_glob_is_still_reported() -> None:
    found = issues("""\
    - {id: a, startWhen: "event:b*.completed", task: {type: noop}}
    - {id: b1, startWhen: "event:a.completed", task: {type: noop}}
""")
    assert any("wait for each other" in f for f in found), found


# --------------------------------------------------------------------------- item 9: all at once


THREE_KINDS = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: three}
spec:
  nodes:
    - {id: extract, task: {type: noop}}
    - id: typo_field
      task: {type: noop}
      startwhen: "event:extract.completed"
    - id: bad_ref
      task: {ref: nothere@1.0.0}
    - id: load
      startWhen: "event:extract.complete"
      task: {type: noop}
    - id: after
      startWhen: "event:typo_field.completed && event:bad_ref.completed"
      task: {type: noop}
"""


def test_schema_reference_and_trigger_problems_are_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "three.yaml"
    path.write_text(THREE_KINDS)
    with pytest.raises(DefinitionErrors) as info:
        load_program_file(path, RUNNER)
    found = [str(i) for i in info.value.issues]
    assert len(found) == 3, found
    assert found[0].endswith("unknown field 'startwhen' (did you mean 'startWhen'?)")
    assert found[0].startswith(f"{path}:9:7: nodes.typo_field.startwhen")
    assert "unknown task 'nothere@1.0.0'" in found[1]
    assert found[2].startswith(f"{path}:13:19: nodes.load.startWhen")
    assert "did you mean extract.completed?" in found[2]


def test_a_node_with_a_bad_id_still_lets_the_others_be_checked() -> None:
    found = issues("""\
    - {id: Bad-Id, task: {type: noop}}
    - {id: a, task: {type: bogus}}
    - {id: b, startWhen: "event:a.complete", task: {type: noop}}
""")
    assert len(found) == 3, found
    assert "not a valid node id" in found[0]
    assert "unknown task type 'bogus'" in found[1]
    assert "did you mean a.completed?" in found[2]


def test_a_document_level_problem_still_stops_at_the_schema() -> None:
    with pytest.raises(DefinitionErrors) as info:
        load_program_text(
            "apiVersion: whenflow/v1\nkind: Pipeline\nmetadata: {name: BAD}\nspec:\n  nodes:\n"
            '    - {id: a, startWhen: "event:a.complete", task: {type: noop}}\n',
            RUNNER,
            path="p.yaml",
        )
    assert len(info.value.issues) == 1
    assert "metadata.name" in str(info.value.issues[0])


# --------------------------------------------------------------------------- item 16, 18: shell


def test_shell_inputs_that_become_one_variable_are_refused() -> None:
    found = issues(
        """\
    - id: s
      task: {type: shell, command: [env]}
      inputBindings: {a-b: "1", a_b: "2", A.B: "3", c: "4"}
""",
        SHELL_AWARE,
    )
    assert len(found) == 2, found
    assert "inputs 'a-b' and 'a_b' both become $WF_INPUT_A_B" in found[0]
    assert found[0].startswith("p.yaml:8:")
    assert "inputs 'a-b' and 'A.B' both become $WF_INPUT_A_B" in found[1]


def test_python_inputs_with_env_alike_names_are_not_refused() -> None:
    program = load("""\
    - id: p
      task: {type: python, callable: plain}
      inputBindings: {a_b: "1", A_B: "2"}
""")
    assert set(program.by_id["p"].definition.input_bindings) == {"a_b", "A_B"}


@pytest.mark.parametrize(
    "command",
    [
        '["sh", "-c", "echo {{ pipeline.input.x }}"]',
        '["bash", "-ec", "grep {{ pipeline.input.x }} f"]',
        '["/usr/bin/env", "bash", "-c", "echo {{ pipeline.input.x }}"]',
        '["python3", "-c", "print({{ pipeline.input.x }})"]',
        '["node", "-e", "console.log({{ pipeline.input.x }})"]',
        # Options whose value comes before the code.
        '["bash", "-o", "pipefail", "-c", "grep {{ pipeline.input.x }} f"]',
        '["sh", "+o", "noglob", "-c", "echo {{ pipeline.input.x }}"]',
        '["python3", "-W", "ignore", "-c", "print({{ pipeline.input.x }})"]',
    ],
)
def test_a_template_inside_interpreter_code_is_a_warning(command: str) -> None:
    program = load(
        f"""\
    - id: s
      task: {{type: shell, command: {command}}}
""",
        SHELL_AWARE,
    )
    [warning] = program.warnings
    assert warning.field.startswith("nodes.s.task.command.")
    assert "turns data into code" in warning.message
    assert "WF_INPUT_" in warning.message
    assert warning.location is not None
    assert warning.location.line == 7


@pytest.mark.parametrize(
    "task",
    [
        '{type: shell, command: ["echo", "{{ pipeline.input.x }}"]}',
        '{type: shell, command: ["sh", "-c", "echo \\"$1\\"", "sh", "{{ pipeline.input.x }}"]}',
        '{type: shell, command: ["sh", "-c", "echo \\"$WF_INPUT_X\\""]}',
        '{type: shell, command: ["bash", "-o", "pipefail", "run.sh", "{{ pipeline.input.x }}"]}',
    ],
)
def test_templates_as_plain_arguments_are_no_warning(task: str) -> None:
    program = load(f"    - id: s\n      task: {task}\n", SHELL_AWARE)
    assert program.warnings == ()


def test_a_template_in_a_script_is_a_warning_since_it_is_never_rendered() -> None:
    program = load(
        """\
    - id: s
      task: {type: shell, script: "echo {{ pipeline.input.x }}"}
""",
        SHELL_AWARE,
    )
    [warning] = program.warnings
    assert warning.field == "nodes.s.task.script"
    assert "never rendered" in warning.message


# --------------------------------------------------------------------------- events send


def test_which_outside_events_a_pipeline_listens_for() -> None:
    program = load("""\
    - {id: a, startWhen: "event:external.go || event:external.deploy_*", task: {type: noop}}
    - id: b
      task: {type: noop}
      inputBindings: {n: "{{ events('external.ping') | length }}"}
    - {id: c, startWhen: "{{ events('external.pong') | length > 0 }}", task: {type: noop}}
""")
    assert external_names(program) == [
        "external.deploy_*",
        "external.go",
        "external.ping",
        "external.pong",
    ]
    for name in ("go", "deploy_prod", "ping", "pong"):
        assert listens_for(program, name), name
    for name in ("og", "deploy", "pings"):
        assert not listens_for(program, name), name


def test_a_pipeline_without_outside_triggers_listens_for_nothing() -> None:
    program = load("    - {id: a, task: {type: noop}}\n")
    assert external_names(program) == []
    assert not listens_for(program, "go")


def test_templates_of_task_fields_and_pipeline_outputs_listen_too() -> None:
    # A shell argument, an approval's message and a pipeline output are templates
    # of the pipeline as much as a binding: `events send` must not refuse them.
    program = load_program_text(
        HEADER
        + """\
    - id: s
      task: {type: shell, command: ["echo", "{{ events('external.ping') | length }}"]}
    - id: gate
      task: {type: approval, message: "{{ events('external.note') | length }} notes"}
  outputs:
    pongs: "{{ events('external.pong') | length }}"
""",
        SHELL_AWARE,
        path="p.yaml",
    )
    assert external_names(program) == ["external.note", "external.ping", "external.pong"]
    for name in ("ping", "note", "pong"):
        assert listens_for(program, name), name
    assert not listens_for(program, "other")
