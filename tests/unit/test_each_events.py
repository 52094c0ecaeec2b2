"""`each:` runs a node once per custom event of another (issue 17 item 3, DESIGN.md §5),
asserted as event sequences: order, maxParallel, the end with the source, resume."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from engine_harness import check_log_invariants, program, run

from whenflow.domain.errors import DefinitionErrors
from whenflow.engine.orchestrator import Orchestrator
from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

SPEC = """
nodes:
  - {id: price, emits: [tick, buy_signal], task: {type: python, callable: feed}}
  - id: trader
    each: "event:price.buy_signal"
    maxParallel: 2
    task: {type: python, callable: trade}
    inputBindings:
      level: "{{ event.payload.level }}"
      seq: "{{ event.seq }}"
      name: "{{ event.name }}"
      index: "{{ index }}"
  - {id: report, startWhen: "event:trader.completed", task: {type: noop},
     inputBindings: {levels: "{{ trader.results[*].level }}"}}
"""


def feed(signals: int, hold: asyncio.Event | None = None) -> Any:
    """Ticks and buy signals; with `hold`, stays running until it is set."""

    async def price(ctx: Any) -> dict[str, Any]:
        for i in range(signals):
            ctx.emit("tick", {"i": i})
            ctx.emit("buy_signal", {"level": 100 + i})
            await asyncio.sleep(0)
        if hold is not None:
            await asyncio.wait_for(hold.wait(), timeout=10)
        return {"signals": signals}

    return price


async def trade(level: int, seq: int, name: str, index: int) -> dict[str, Any]:
    for _ in range(3):  # a few loop turns, so instances overlap
        await asyncio.sleep(0)
    return {"level": level, "seq": seq, "name": name, "index": index}


def max_running(events: list[Any], node: str) -> int:
    """The most instances of `node` running at once, read from the event log."""
    running = peak = 0
    for e in events:
        if e.event_type == f"{node}.item_started":
            running += 1
            peak = max(peak, running)
        elif e.event_type in (f"{node}.item_completed", f"{node}.item_failed"):
            running -= 1
    return peak


def test_one_instance_per_signal_in_order_with_max_parallel_and_ending_with_the_source() -> None:
    hold = asyncio.Event()

    def listener(event: Any) -> None:
        if event.event_type == "trader.item_completed" and event.payload["index"] == 1:
            hold.set()  # the feed ends only once trades have finished

    r = run(SPEC, {"feed": feed(5, hold), "trade": trade}, on_event=listener)
    assert r.result.status.value == "completed"
    events = r.store.events()
    types = r.events
    signals = [e for e in events if e.event_type == "price.buy_signal"]
    results = r.result.nodes["trader"].outputs["results"]
    assert [x["level"] for x in results] == [100, 101, 102, 103, 104]
    assert [x["seq"] for x in results] == [e.seq for e in signals]
    assert [x["index"] for x in results] == [0, 1, 2, 3, 4]
    assert {x["name"] for x in results} == {"buy_signal"}
    # It starts with the first signal, trades before the feed ends, and ends after it.
    assert types.index("trader.started") == types.index("price.buy_signal") + 1
    assert types.index("trader.item_completed") < types.index("price.completed")
    assert types.index("trader.completed") > types.index("price.completed")
    assert types.count("trader.item_started") == 5
    assert max_running(events, "trader") == 2
    started = [e.payload["event_seq"] for e in events if e.event_type == "trader.item_started"]
    assert started == [e.seq for e in signals]  # queued in event order
    assert r.result.nodes["report"].outputs["levels"] == [100, 101, 102, 103, 104]


def test_no_signal_before_the_source_ends_completes_with_an_empty_list() -> None:
    r = run(SPEC, {"feed": feed(0), "trade": trade})
    assert r.result.status.value == "completed"
    assert r.result.nodes["trader"].outputs["results"] == []
    assert r.events.index("trader.started") > r.events.index("price.completed")


def test_a_failed_instance_follows_on_item_error() -> None:
    async def picky(level: int, seq: int, name: str, index: int) -> dict[str, Any]:
        if index == 1:
            raise ValueError("no liquidity")
        return {"level": level}

    spec = SPEC.replace("maxParallel: 2", "maxParallel: 2\n    onItemError: drop")
    r = run(spec, {"feed": feed(3), "trade": picky})
    assert r.status("trader") == "completed"
    assert [x["level"] for x in r.result.nodes["trader"].outputs["results"]] == [100, 102]
    assert [p["index"] for p in r.payloads("trader.item_failed")] == [1]


def test_a_stopped_source_ends_the_consumer_after_its_instances() -> None:
    async def endless(ctx: Any) -> dict[str, Any]:
        i = 0
        while True:
            ctx.emit("buy_signal", {"level": i})
            i += 1
            await asyncio.sleep(0)

    spec = SPEC.replace(
        "task: {type: python, callable: feed}}",
        "task: {type: python, callable: feed},\n"
        "     stopWhen: \"{{ events('trader.item_completed') | length >= 3 }}\"}",
    )
    r = run(spec, {"feed": endless, "trade": trade})
    assert r.status("price") == "stopped"
    assert r.status("trader") == "completed"
    signals = r.events.count("price.buy_signal")
    assert len(r.result.nodes["trader"].outputs["results"]) == signals
    assert r.events.index("trader.completed") > r.events.index("price.stopped")


@pytest.mark.parametrize(
    ("each", "problem"),
    [
        ("price.buy_signal", "each must be event:<node>.<event>"),
        ("event:price.buy_*", "no wildcards"),
        ("event:prices.buy_signal", "unknown node 'prices'"),
        ("event:price.sell_signal", "declares no custom event 'sell_signal'"),
        ("event:price.completed", "declares no custom event 'completed'"),
    ],
)
def test_validate_checks_each_with_its_location(each: str, problem: str) -> None:
    spec = SPEC.replace('each: "event:price.buy_signal"', f'each: "{each}"')
    with pytest.raises(DefinitionErrors) as caught:
        program(spec, {"feed": feed(1), "trade": trade})
    issue = caught.value.issues[0]
    assert problem in issue.message
    assert str(issue).startswith("t.yaml:8:13:")


def test_each_and_for_each_together_is_an_error() -> None:
    spec = SPEC.replace("maxParallel: 2", 'maxParallel: 2\n    forEach: "{{ [1] }}"')
    with pytest.raises(DefinitionErrors, match="both each and forEach"):
        program(spec, {"feed": feed(1), "trade": trade})


def test_an_approval_node_cannot_use_each() -> None:
    spec = SPEC.replace(
        "  - {id: report,",
        '  - {id: ok, each: "event:price.buy_signal", task: {type: approval}}\n  - {id: report,',
    )
    with pytest.raises(DefinitionErrors, match="an approval node cannot use each"):
        program(spec, {"feed": feed(1), "trade": trade})


def test_event_is_only_in_scope_in_an_each_node() -> None:
    spec = SPEC.replace('levels: "{{ trader.results[*].level }}"', 'levels: "{{ event.seq }}"')
    with pytest.raises(DefinitionErrors, match="'event' is only defined in a node with each"):
        program(spec, {"feed": feed(1), "trade": trade})


def test_the_default_start_of_an_each_node_waits_for_the_first_event() -> None:
    p = program(SPEC, {"feed": feed(1), "trade": trade})
    assert p.effective_start_when("trader") == (
        "event:pipeline.started && (event:price.buy_signal || {{ settled('price') }})"
    )


def test_resume_from_every_durable_boundary_never_reruns_a_finished_instance() -> None:
    fns = {"feed": feed(4), "trade": trade}

    async def scenario() -> int:
        store = InMemoryStateStore()
        orch = Orchestrator(
            program(SPEC, fns),
            store=store,
            runner=InlineRunner(fns),
            artifacts=InMemoryArtifactStore(),
        )
        reference = await orch.run()
        assert reference.status.value == "completed"
        resumed = 0
        for cut in store.boundaries:
            # The durable state a crash after `cut` records leaves behind.
            crashed = InMemoryStateStore()
            crashed.records = list(store.records[:cut])
            snapshot = await crashed.load_execution(orch.execution_id)
            if snapshot.status.is_terminal:
                continue
            runner = InlineRunner(fns)
            again = Orchestrator(
                program(SPEC, fns),
                store=crashed,
                runner=runner,
                artifacts=InMemoryArtifactStore(),
                execution_id=orch.execution_id,
            )
            result = await again.resume(snapshot)
            resumed += 1
            check_log_invariants(crashed)
            assert result.status.value == "completed", cut
            done = {
                e.payload["index"]
                for e in snapshot.events
                if e.event_type == "trader.item_completed"
            }
            rerun = [x.item_index for x in runner.calls if x.node_id == "trader"]
            assert not done & set(rerun), cut
            after = crashed.events()
            signals = [e.seq for e in after if e.event_type == "price.buy_signal"]
            results = result.nodes["trader"].outputs["results"]
            # One instance per signal in the whole log, in its order, none lost.
            assert [x["seq"] for x in results] == signals, cut
            assert len(signals) >= 4, cut
        return resumed

    assert asyncio.run(scenario()) > 10


async def stop_like_a_crash(running: asyncio.Task[Any]) -> None:
    """End a run as a dying process would: the run, its attempts and its inbox reader stop,
    nothing more is written, and the execution stays `running` in the store."""
    running.cancel()
    workers = [
        t
        for t in asyncio.all_tasks()
        if t is not running and t.get_name().startswith(("whenflow:", "whenflow-inbox:"))
    ]
    for task in workers:
        task.cancel()
    await asyncio.gather(running, *workers, return_exceptions=True)


def test_a_crash_mid_run_then_resume_keeps_finished_trades_and_loses_no_signal() -> None:
    feeds: list[int] = []

    async def price(ctx: Any) -> dict[str, Any]:
        feeds.append(ctx.attempt)
        for i in range(4):
            ctx.emit("buy_signal", {"level": 100 + i})
            await asyncio.sleep(0)
        if len(feeds) == 1:  # the first process dies while its feed still runs
            await asyncio.Event().wait()
        return {"signals": 4}

    fns = {"feed": price, "trade": trade}

    async def scenario() -> None:
        store = InMemoryStateStore()
        two_done = asyncio.Event()

        def listener(event: Any) -> None:
            if event.event_type == "trader.item_completed" and event.payload["index"] == 1:
                two_done.set()

        first = Orchestrator(
            program(SPEC, fns),
            store=store,
            runner=InlineRunner(fns),
            artifacts=InMemoryArtifactStore(),
            on_event=listener,
        )
        running = asyncio.create_task(first.run())
        await asyncio.wait_for(two_done.wait(), timeout=10)
        await stop_like_a_crash(running)
        snapshot = await store.load_execution(first.execution_id)
        assert snapshot.status.value == "running"
        done = {
            e.payload["index"] for e in snapshot.events if e.event_type == "trader.item_completed"
        }
        assert {0, 1} <= done

        runner = InlineRunner(fns)
        again = Orchestrator(
            program(SPEC, fns),
            store=store,
            runner=runner,
            artifacts=InMemoryArtifactStore(),
            execution_id=first.execution_id,
        )
        result = await again.resume(snapshot)
        assert result.status.value == "completed"
        rerun = [c.item_index for c in runner.calls if c.node_id == "trader"]
        assert not done & set(rerun)  # finished trades are not run again
        assert feeds == [1, 2]  # the feed's lost attempt ran again
        signals = [e.seq for e in store.events() if e.event_type == "price.buy_signal"]
        assert len(signals) == 8  # the 4 before the crash are kept, 4 more after it
        results = result.nodes["trader"].outputs["results"]
        assert [x["seq"] for x in results] == signals
        check_log_invariants(store)

    asyncio.run(scenario())
