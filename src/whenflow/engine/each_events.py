"""`each:`: one task instance per custom event of a source node (DESIGN.md §5, Signals).

An `each: "event:price.buy_signal"` node runs as a forEach node whose list
grows: every `price.buy_signal` event, in `seq` order, is one more item, in scope
as `event` (`name`, `event_type`, `source`, `seq`, `timestamp`, `payload`) with
its `index`. The instances are the forEach machinery's (`foreach.fill`,
`maxParallel`, `onItemError`, `<node>.item_completed` / `item_failed`, results
in order); this module only feeds it. The list is derived from the event log,
so a resumed execution rebuilds it exactly; the node completes once its source
is terminal and every instance has ended.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from whenflow.domain.events import Event
from whenflow.domain.states import NodeState
from whenflow.engine.foreach import fill, start_foreach
from whenflow.engine.runtime import ForEachRun, NodeRuntime

if TYPE_CHECKING:
    from whenflow.engine.execution_state import ExecutionState

EACH_SCOPE = "event"


def event_scope(event: Event) -> dict[str, Any]:
    """What an instance sees as `event`."""
    return {
        "name": event.event_type.partition(".")[2],
        "event_type": event.event_type,
        "source": event.source,
        "seq": event.seq,
        "timestamp": event.timestamp,
        "payload": dict(event.payload),
    }


def each_run(state: ExecutionState, rt: NodeRuntime, events: Iterable[Event]) -> ForEachRun:
    """The run of an `each:` node over the matching events of `events` so far."""
    wanted = rt.program.each
    assert wanted is not None
    source = wanted.partition(".")[0]
    items = [event_scope(e) for e in events if e.event_type == wanted]
    still_open = not state.nodes[source].state.is_terminal
    return ForEachRun(items=items, scope=EACH_SCOPE, open=still_open)


def start_items(state: ExecutionState, rt: NodeRuntime) -> bool:
    """Start a forEach or `each:` node and return True; False for any other node."""
    if rt.program.for_each is not None:
        start_foreach(state, rt)
    elif rt.program.each is not None:
        start_each(state, rt)
    else:
        return False
    return True


def start_each(state: ExecutionState, rt: NodeRuntime) -> None:
    """Start an `each:` node: one instance per matching event already published, and
    one per event to come until its source ends."""
    run = each_run(state, rt, state.events)
    state.move(rt, NodeState.RUNNING)
    rt.attempt = 1
    rt.started_at = state.clock()
    rt.foreach = run
    state.node_row(rt)
    state.publish(
        f"{rt.id}.started", rt.id, {"attempt": 1, "each": rt.program.each, "events": len(run.items)}
    )
    fill(state, rt)


def install_each(state: ExecutionState) -> None:
    """Feed the running `each:` nodes the events of their sources; nothing for a
    pipeline without `each:` nodes.

    The event is added to the list at once (so the order is the log's), and the
    instances are queued in a unit of their own: a listener must not publish.
    """
    consumers: dict[str, list[NodeRuntime]] = {}
    for rt in state.node_list:
        if rt.program.each is not None:
            consumers.setdefault(rt.program.each.partition(".")[0], []).append(rt)
    if not consumers:
        return
    due: set[str] = set()

    def refill(rt: NodeRuntime) -> None:
        due.discard(rt.id)
        if rt.state is NodeState.RUNNING and rt.foreach is not None:
            fill(state, rt)

    def on_event(event: Event) -> None:
        for rt in consumers.get(event.source, ()):
            run = rt.foreach
            if run is None or not run.open or rt.state is not NodeState.RUNNING:
                continue
            if event.event_type == rt.program.each:
                run.items.append(event_scope(event))
            elif state.nodes[event.source].state.is_terminal:
                run.open = False  # the source's last event: no more items
            else:
                continue
            if rt.id not in due:
                due.add(rt.id)
                state.call_later(0, refill, rt)

    state.listeners.append(on_event)
