"""A template that fails, whatever the reason, fails its node and nothing else.

Bounds (time, size), callables reaching data, and errors such as RecursionError
used to stall the dispatcher, hand a task a bound method, or end the whole
execution as an "internal error" cancelling unrelated nodes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_harness import run

SOURCE = """
nodes:
  - id: src
    task: {type: python, callable: src}
"""


def src() -> dict[str, Any]:
    return {"s": "abc", "l": list(range(300))}


async def sibling() -> dict[str, Any]:
    await asyncio.sleep(0.05)
    return {"ok": True}


def received(calls: list[Any]) -> Any:
    def fn(**inputs: Any) -> dict[str, Any]:
        calls.append(inputs)
        return {}

    return fn


def test_a_method_read_by_a_binding_fails_the_node_and_never_reaches_the_task() -> None:
    calls: list[Any] = []
    r = run(
        SOURCE
        + """
  - id: use
    task: {type: python, callable: use}
    inputBindings: {v: "{{ src.s.upper }}"}
  - id: use_list
    task: {type: python, callable: use}
    inputBindings: {v: "{{ [src.s.upper] }}"}
  - id: use_text
    task: {type: python, callable: use}
    inputBindings: {v: "text {{ src.s.upper }}"}
""",
        {"src": src, "use": received(calls)},
    )
    assert calls == []
    for node in ("use", "use_list", "use_text"):
        assert r.node_events(node) == [f"{node}.failed"]
        (payload,) = r.payloads(f"{node}.failed")
        assert "src.s.upper" in payload["message"]
        assert "method, not data" in payload["message"]
    assert r.status("src") == "completed"


def test_a_method_as_a_condition_fails_the_node_instead_of_being_true() -> None:
    calls: list[Any] = []
    r = run(
        SOURCE
        + """
  - id: gated
    startWhen: "event:src.completed && {{ src.s.upper }}"
    task: {type: python, callable: use}
  - id: each
    forEach: "{{ [src.s.upper] }}"
    task: {type: python, callable: use}
""",
        {"src": src, "use": received(calls)},
    )
    assert calls == []
    assert r.node_events("gated") == ["gated.failed"]
    assert "method, not data" in r.payloads("gated.failed")[0]["message"]
    assert r.node_events("each") == ["each.failed"]


def test_a_method_as_a_pipeline_output_fails_the_execution_with_the_template() -> None:
    r = run(SOURCE + 'outputs: {v: "{{ src.s.upper }}"}\n', {"src": src})
    assert r.result.status.value == "failed"
    assert "src.s.upper" in (r.result.error or "")


@pytest.mark.parametrize(
    ("binding", "words"),
    [
        ("{% for x in [1] recursive %}{{ loop([x]) }}{% endfor %}", "RecursionError"),
        (
            "{% for a in src.l %}{% for b in src.l %}{% for c in src.l %}"
            "{% endfor %}{% endfor %}{% endfor %}",
            "limit of one template",
        ),
        ("{{ 'x' | center(pipeline.input.width) }}", "1,000,000,000"),
        ("{{ ((pipeline.input.base ** 1000) ** 1000) ** 1000 > 0 }}", "MAX_INT_BITS"),
    ],
)
def test_a_failing_binding_fails_only_its_node(binding: str, words: str) -> None:
    r = run(
        """
inputs:
  width: {type: integer}
  base: {type: integer}
"""
        + SOURCE
        + f"""
  - id: heavy
    task: {{type: python, callable: use}}
    inputBindings: {{v: "{binding}"}}
  - id: other
    task: {{type: python, callable: sibling}}
  - id: after_other
    task: {{type: python, callable: use}}
    inputBindings: {{x: "{{{{ other.ok }}}}"}}
""",
        {"src": src, "use": received([]), "sibling": sibling},
        inputs={"width": 1_000_000_000, "base": 10},
    )
    assert r.node_events("heavy") == ["heavy.failed"]
    (payload,) = r.payloads("heavy.failed")
    assert words in payload["message"]
    assert "heavy" in payload["message"]
    assert r.node_events("other") == ["other.started", "other.completed"]
    assert r.node_events("after_other") == ["after_other.started", "after_other.completed"]
    assert r.result.status.value == "failed"
    assert "internal error" not in (r.result.error or "")
    assert r.events[-1] == "pipeline.failed"


class _OutOfMemorySecrets:
    """A secrets backend that fails as a template reads it (an injected fault)."""

    def get(self, name: str) -> str | None:
        raise MemoryError

    def describe(self, name: str) -> str:
        return "nowhere"


def test_a_memory_error_in_a_template_fails_only_its_node() -> None:
    r = run(
        SOURCE
        + """
  - id: reads_secret
    task: {type: python, callable: use}
    inputBindings: {token: "{{ secret('TOKEN') }}"}
  - id: other
    task: {type: python, callable: sibling}
""",
        {"src": src, "use": received([]), "sibling": sibling},
        secrets=_OutOfMemorySecrets(),
    )
    assert r.node_events("reads_secret") == ["reads_secret.failed"]
    (payload,) = r.payloads("reads_secret.failed")
    assert "MemoryError" in payload["message"]
    assert "secret('TOKEN')" in payload["message"]
    assert r.node_events("other") == ["other.started", "other.completed"]
    assert r.status("src") == "completed"
    assert "internal error" not in (r.result.error or "")


def test_a_negated_method_in_a_condition_fails_the_node_instead_of_deciding_it() -> None:
    calls: list[Any] = []
    r = run(
        SOURCE
        + """
  - id: gated
    startWhen: "event:src.completed && {{ not src.s.isdigit }}"
    task: {type: python, callable: use}
  - id: chosen
    task: {type: python, callable: use}
    inputBindings: {v: "{{ 'digits' if src.s.isdigit else 'text' }}"}
""",
        {"src": src, "use": received(calls)},
    )
    assert calls == []
    for node in ("gated", "chosen"):
        assert r.node_events(node) == [f"{node}.failed"]
        assert "method, not data" in r.payloads(f"{node}.failed")[0]["message"]
