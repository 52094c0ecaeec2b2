"""Counts over a running node's custom events are decided as soon as they can be
(issue 17 item 3, DESIGN.md §5 Signals), asserted as event sequences."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_harness import program, run

from whenflow.domain.errors import DefinitionErrors
from whenflow.domain.events import Event
from whenflow.dsl.event_counts import grows_with_events
from whenflow.dsl.trigger_ast import And, ConditionAtom, to_source
from whenflow.dsl.trigger_parser import ExpressionSyntaxError, parse_trigger
from whenflow.engine.explain import explain_node
from whenflow.engine.template_helpers import EventMatches, matching_events


def endless_ticks(ctx: Any) -> Any:
    async def feed() -> dict[str, Any]:
        i = 0
        while True:  # only a stopWhen ends it
            ctx.emit("tick", {"i": i})
            i += 1
            await asyncio.sleep(0)

    return feed()


def ticks_then_wait(n: int, until: asyncio.Event) -> Any:
    """Emit n ticks, then keep running until `until` is set (by an event listener)."""

    async def feed(ctx: Any) -> dict[str, Any]:
        for i in range(n):
            ctx.emit("tick", {"i": i})
            await asyncio.sleep(0)
        await asyncio.wait_for(until.wait(), timeout=10)
        return {"sent": n}

    return feed


def _nth(events: list[str], event_type: str, n: int) -> int:
    return [i for i, e in enumerate(events) if e == event_type][n - 1]


def test_a_start_count_fires_at_the_third_tick_while_the_emitter_runs() -> None:
    watcher_started = asyncio.Event()

    def listener(event: Any) -> None:
        if event.event_type == "watcher.started":
            watcher_started.set()

    r = run(
        """
        nodes:
          - {id: feed, emits: [tick], task: {type: python, callable: feed}}
          - id: watcher
            startWhen: "{{ events('feed.tick') | length >= 3 }}"
            task: {type: noop}
        """,
        {"feed": ticks_then_wait(5, watcher_started)},
        on_event=listener,
    )
    assert r.result.status.value == "completed"
    events = r.events
    third = _nth(events, "feed.tick", 3)
    assert events[third + 1] == "watcher.started"
    assert events.index("watcher.completed") < events.index("feed.completed")
    assert events.count("feed.tick") == 5


def test_a_stop_count_over_its_own_events_stops_a_running_node() -> None:
    r = run(
        """
        nodes:
          - id: feed
            emits: [tick]
            stopWhen: "{{ events('feed.tick') | length >= 4 }}"
            task: {type: python, callable: feed}
        """,
        {"feed": endless_ticks},
    )
    assert r.status("feed") == "stopped"
    events = r.events
    assert events[_nth(events, "feed.tick", 4) + 1] == "feed.stopped"
    assert events.count("feed.tick") == 4


def test_a_count_that_could_turn_false_again_stays_unknown_until_the_source_ends() -> None:
    released = asyncio.Event()

    def listener(event: Any) -> None:
        if event.event_type == "feed.tick" and event.payload["i"] == 4:
            released.set()

    r = run(
        """
        nodes:
          - {id: feed, emits: [tick], task: {type: python, callable: feed}}
          - id: few
            startWhen: "{{ events('feed.tick') | length < 3 }}"
            task: {type: noop}
          - id: many
            startWhen: "{{ events('feed.tick') | length > 2 and settled(feed) }}"
            task: {type: noop}
        """,
        {"feed": ticks_then_wait(5, released)},
        on_event=listener,
    )
    events = r.events
    assert r.status("few") == "skipped"
    assert events.index("few.skipped") > events.index("feed.completed")
    # `settled(feed)` reads feed by name: even a growing count waits for it.
    assert events.index("many.started") > events.index("feed.completed")


def test_a_count_reading_another_node_by_name_waits_for_that_node_only() -> None:
    gate = asyncio.Event()

    def listener(event: Any) -> None:
        if event.event_type == "watcher.started":
            gate.set()

    r = run(
        """
        nodes:
          - {id: limit, task: {type: python, callable: limit}}
          - {id: feed, emits: [tick], task: {type: python, callable: feed}}
          - id: watcher
            startWhen: "{{ events('feed.tick') | length >= limit.n }}"
            task: {type: noop}
        """,
        {"feed": ticks_then_wait(4, gate), "limit": lambda: {"n": 2}},
        on_event=listener,
    )
    events = r.events
    assert r.status("watcher") == "completed"
    assert events.index("watcher.started") > events.index("limit.completed")
    assert events.index("watcher.started") < events.index("feed.completed")


def test_which_conditions_only_grow_with_events() -> None:
    assert grows_with_events("events('a.tick') | length >= 3")
    assert grows_with_events("3 < events('a.tick') | count and x.ok")
    assert grows_with_events("not (events('a.tick') | length < 3)")
    assert grows_with_events("events('a.tick')")
    assert not grows_with_events("events('a.tick') | length < 3")
    assert not grows_with_events("events('a.tick') | length == 3")
    assert not grows_with_events("(events('a.tick') | last).payload.v > 1")
    assert not grows_with_events("x.n > 2")


def test_the_count_form_parses_to_the_same_condition_and_prints_back() -> None:
    expr = parse_trigger("event:a.started && count( event:feed.tick )>=3")
    assert isinstance(expr, And)
    count = expr.operands[1]
    assert count == ConditionAtom(
        "events('feed.tick') | length >= 3", 19, "count(event:feed.tick) >= 3"
    )
    assert to_source(expr) == "event:a.started && count(event:feed.tick) >= 3"
    assert to_source(parse_trigger("!count(event:x.y) == 1")) == "!count(event:x.y) == 1"


@pytest.mark.parametrize(
    "text", ["count(event:feed) >= 3", "count(event:feed.tick) >= n", "count(feed.tick) > 1"]
)
def test_a_malformed_count_is_a_syntax_error_at_its_column(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError, match=r"count\(event:<node>.<event>\)") as caught:
        parse_trigger("event:a.x && " + text)
    assert caught.value.column == 13


def test_the_count_form_is_decided_at_the_event_and_explained_in_its_own_words() -> None:
    spec = """
        nodes:
          - id: feed
            emits: [tick]
            stopWhen: "count(event:feed.tick) >= 4"
            task: {type: python, callable: feed}
          - id: late
            startWhen: "count(event:feed.tick) < 2"
            task: {type: noop}
        """
    r = run(spec, {"feed": endless_ticks})
    assert r.status("feed") == "stopped"
    events = r.events
    assert events[_nth(events, "feed.tick", 4) + 1] == "feed.stopped"
    assert r.status("late") == "skipped"
    assert r.result.nodes["feed"].reason == "stopWhen: count(event:feed.tick) >= 4 is true"
    assert r.orchestrator.program.effective_start_when("late") == "count(event:feed.tick) < 2"

    snapshot = asyncio.run(r.store.load_execution(r.result.execution_id))
    found = explain_node(r.orchestrator.program, snapshot, "feed")
    assert found.stop_when is not None
    assert found.stop_when.source == "count(event:feed.tick) >= 4"
    assert found.stop_when.value is True
    assert "while feed still ran" in found.stop_when.reason
    fourth = [e.seq for e in snapshot.events if e.event_type == "feed.tick"][3]
    assert [d.seq for d in found.stop_when.decided_by] == [fourth]


def test_validate_checks_the_pattern_of_a_count() -> None:
    with pytest.raises(DefinitionErrors, match=r"feed\.tock can never happen") as caught:
        program(
            """
            nodes:
              - {id: feed, emits: [tick], task: {type: noop}}
              - {id: b, startWhen: "count(event:feed.tock) >= 2", task: {type: noop}}
            """
        )
    assert str(caught.value.issues[0]).startswith("t.yaml:7:")


def _event(seq: int, event_type: str) -> Event:
    return Event(f"e{seq}", "x", seq, event_type, event_type.partition(".")[0], 0.0, {"n": seq})


def test_event_matches_extend_with_new_events_and_copies_are_independent() -> None:
    log = [_event(1, "feed.tick"), _event(2, "feed.done")]
    matches = EventMatches(lambda: log)
    assert [e["seq"] for e in matches.shared("feed.tick")] == [1]
    log.extend([_event(3, "feed.tick"), _event(4, "other.tick")])
    assert [e["seq"] for e in matches.shared("feed.tick")] == [1, 3]
    assert [e["seq"] for e in matches.shared("*.tick")] == [1, 3, 4]
    assert matches.shared("*.tick") == matching_events(log, "*.tick")
    copy = matches.copied("feed.tick")
    copy[0]["payload"]["n"] = 99  # a task may change its inputs
    assert matches.shared("feed.tick")[0]["payload"] == {"n": 1}
    log = [_event(1, "feed.tick")]  # a resume replaces the log: start again
    assert [e["seq"] for e in matches.shared("feed.tick")] == [1]


def test_a_start_count_does_not_wait_for_the_outputs_a_binding_reads() -> None:
    with pytest.raises(DefinitionErrors, match="startWhen can be true before 'feed' has finished"):
        program(
            """
            nodes:
              - {id: feed, emits: [tick], task: {type: noop}}
              - id: b
                startWhen: "count(event:feed.tick) >= 2"
                task: {type: noop}
                inputBindings: {n: "{{ feed.n }}"}
            """
        )
    program(
        """
        nodes:
          - {id: feed, emits: [tick], task: {type: noop}}
          - id: b
            startWhen: "count(event:feed.tick) >= 2 && event:feed.completed"
            task: {type: noop}
            inputBindings: {n: "{{ feed.n }}"}
        """
    )


def test_a_binding_may_read_the_events_a_start_count_counts_and_sees_those_so_far() -> None:
    gate = asyncio.Event()

    def listener(event: Any) -> None:
        if event.event_type == "b.completed":
            gate.set()

    r = run(
        """
        nodes:
          - {id: feed, emits: [tick], task: {type: python, callable: feed}}
          - id: b
            startWhen: "count(event:feed.tick) >= 2"
            task: {type: python, callable: seen}
            inputBindings: {ticks: "{{ events('feed.tick') | map(attribute='payload.i') | list }}"}
        """,
        {"feed": ticks_then_wait(5, gate), "seen": lambda ticks: {"ticks": ticks}},
        on_event=listener,
    )
    assert r.result.nodes["b"].outputs["ticks"] == [0, 1]
    assert r.events.index("b.completed") < r.events.index("feed.completed")
