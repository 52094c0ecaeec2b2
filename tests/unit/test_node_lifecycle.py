"""DESIGN.md §5 — node states and execution semantics, asserted as event sequences."""

from __future__ import annotations

import asyncio
from typing import Any

from engine_harness import make, run, run_async

from whenflow.domain.records import VariableWritten


class Transient(RuntimeError):
    pass


class Fatal(RuntimeError):
    pass


def failing_until(n: int) -> Any:
    calls = {"n": 0}

    def fn() -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] < n:
            raise Transient(f"call {calls['n']}")
        return {"calls": calls["n"]}

    return fn


async def forever() -> dict[str, Any]:
    await asyncio.Event().wait()
    return {}


def test_retry_with_exponential_backoff_capped_by_max_delay() -> None:
    r = run(
        """
        nodes:
          - id: flaky
            task: {type: python, callable: flaky}
            retry: {maxAttempts: 4, delay: 10ms, backoff: exponential, maxDelay: 25ms}
        """,
        {"flaky": failing_until(4)},
    )
    assert r.node_events("flaky") == [
        "flaky.started",
        "flaky.retrying",
        "flaky.started",
        "flaky.retrying",
        "flaky.started",
        "flaky.retrying",
        "flaky.started",
        "flaky.completed",
    ]
    assert [p["delay"] for p in r.payloads("flaky.retrying")] == [0.01, 0.02, 0.025]
    assert [p["attempt"] for p in r.payloads("flaky.started")] == [1, 2, 3, 4]
    assert r.result.nodes["flaky"].attempts == 4
    assert r.result.nodes["flaky"].outputs == {"calls": 4}


def test_retries_run_out_and_the_node_fails() -> None:
    r = run(
        """
        nodes:
          - {id: flaky, task: {type: python, callable: flaky}, retry: {maxAttempts: 2, delay: 0s}}
          - {id: after, task: {type: noop}, inputBindings: {x: "{{ flaky.calls }}"}}
        """,
        {"flaky": failing_until(5)},
    )
    assert r.events == [
        "pipeline.started",
        "flaky.started",
        "flaky.retrying",
        "flaky.started",
        "flaky.failed",
        "after.skipped",
        "pipeline.failed",
    ]
    assert r.payloads("flaky.failed")[0]["error_type"] == "Transient"


def test_retry_on_limits_which_errors_retry() -> None:
    def fatal() -> dict[str, Any]:
        raise Fatal("no point retrying")

    r = run(
        """
        nodes:
          - id: a
            task: {type: python, callable: fatal}
            retry: {maxAttempts: 5, delay: 0s, retryOn: [Transient]}
        """,
        {"fatal": fatal},
    )
    assert r.node_events("a") == ["a.started", "a.failed"]


def test_timeout_is_a_failed_attempt() -> None:
    r = run(
        """
        nodes:
          - id: slow
            task: {type: python, callable: forever}
            timeout: 20ms
            retry: {maxAttempts: 2, delay: 0s}
        """,
        {"forever": forever},
    )
    assert r.node_events("slow") == ["slow.started", "slow.retrying", "slow.started", "slow.failed"]
    assert r.payloads("slow.failed")[0]["error_type"] == "TaskTimeout"
    assert r.payloads("slow.retrying")[0]["error_type"] == "TaskTimeout"


def test_stop_when_stops_a_running_node_and_cancels_its_task() -> None:
    cancelled: list[bool] = []

    async def worker() -> dict[str, Any]:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return {}

    r = run(
        """
        nodes:
          - {id: worker, task: {type: python, callable: worker}, stopWhen: "event:stopper.completed"}
          - {id: stopper, task: {type: noop}}
        """,
        {"worker": worker},
    )
    assert r.node_events("worker") == ["worker.started", "worker.stopped"]
    assert r.events.index("worker.stopped") > r.events.index("stopper.completed")
    assert cancelled == [True]
    assert r.result.status.value == "completed"


def test_stop_when_on_a_pending_node_means_it_never_starts() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: b, task: {type: noop}, inputBindings: {x: "{{ a.x }}"}, stopWhen: "event:pipeline.started"}
        """
    )
    assert r.node_events("b") == ["b.stopped"]


def test_pipeline_stop_when_stops_everything() -> None:
    r = run(
        """
        stopWhen: "event:trigger.completed"
        nodes:
          - {id: long, task: {type: python, callable: forever}}
          - {id: trigger, task: {type: noop}}
          - {id: later, task: {type: noop}, startWhen: "event:long.completed"}
        """,
        {"forever": forever},
    )
    assert r.result.status.value == "stopped"
    assert r.status("long") == "stopped"
    assert r.status("later") == "stopped"
    assert r.events[-1] == "pipeline.stopped"


def test_allow_failure_keeps_the_execution_completed() -> None:
    def bad() -> dict[str, Any]:
        raise Fatal("x")

    r = run(
        """
        nodes:
          - {id: optional, task: {type: python, callable: bad}, allowFailure: true}
          - {id: main, task: {type: noop}}
        """,
        {"bad": bad},
    )
    assert r.result.status.value == "completed"
    assert r.status("optional") == "failed"


def test_fail_fast_cancels_the_rest() -> None:
    def bad() -> dict[str, Any]:
        raise Fatal("x")

    r = run(
        """
        failFast: true
        nodes:
          - {id: long, task: {type: python, callable: forever}}
          - {id: bad, task: {type: python, callable: bad}}
          - {id: later, task: {type: noop}, startWhen: "event:long.completed"}
        """,
        {"forever": forever, "bad": bad},
    )
    assert r.result.status.value == "failed"
    assert r.events[-4:] == ["bad.failed", "long.cancelled", "later.cancelled", "pipeline.failed"]


def test_concurrency_limits_running_tasks() -> None:
    running = {"now": 0, "max": 0}

    async def task() -> dict[str, Any]:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        for _ in range(3):
            await asyncio.sleep(0)  # yield so others could start if allowed
        running["now"] -= 1
        return {}

    nodes = "\n".join(f"  - {{id: n{i}, task: {{type: python, callable: task}}}}" for i in range(6))
    r = run(f"concurrency: 2\nnodes:\n{nodes}\n", {"task": task})
    assert running["max"] == 2
    assert r.result.status.value == "completed"


def test_cancel_ends_running_and_pending_nodes() -> None:
    async def scenario() -> None:
        orch, store = make(
            """
            nodes:
              - {id: long, task: {type: python, callable: forever}}
              - {id: later, task: {type: noop}, startWhen: "event:long.completed"}
            """,
            {"forever": forever},
        )
        started = asyncio.get_running_loop().create_future()
        orch.add_listener(lambda e: e.event_type == "long.started" and started.set_result(None))
        await orch.start()
        await started
        orch.cancel("user asked")
        result = await orch.wait()
        assert result.status.value == "cancelled"
        assert store.event_types()[-3:] == [
            "long.cancelled",
            "later.cancelled",
            "pipeline.cancelled",
        ]

    asyncio.run(scenario())


def test_for_each_runs_items_in_parallel_bounded_and_keeps_order() -> None:
    running = {"now": 0, "max": 0}

    async def square(x: int) -> dict[str, Any]:
        running["now"] += 1
        running["max"] = max(running["max"], running["now"])
        for _ in range(x % 3 + 1):
            await asyncio.sleep(0)
        running["now"] -= 1
        return {"y": x * x}

    r = run(
        """
        nodes:
          - {id: src, task: {type: noop}, inputBindings: {xs: [3, 1, 4, 1, 5, 9, 2]}}
          - id: sq
            forEach: "{{ src.xs }}"
            maxParallel: 3
            task: {type: python, callable: square}
            inputBindings: {x: "{{ item }}"}
          - {id: total, task: {type: noop}, inputBindings: {ys: "{{ sq.results | map(attribute='y') | list }}"}}
        """,
        {"square": square},
    )
    assert running["max"] == 3
    assert r.result.nodes["total"].outputs == {"ys": [9, 1, 16, 1, 25, 81, 4]}
    assert r.node_events("sq").count("sq.item_completed") == 7
    assert sorted(p["index"] for p in r.payloads("sq.item_completed")) == list(range(7))


def test_for_each_item_sees_item_and_index() -> None:
    r = run(
        """
        nodes:
          - id: each
            forEach: "{{ ['a', 'b'] }}"
            task: {type: noop}
            inputBindings: {label: "{{ index }}:{{ item }}"}
        """
    )
    assert r.result.nodes["each"].outputs == {"results": [{"label": "0:a"}, {"label": "1:b"}]}


def test_for_each_empty_list_completes_with_empty_results() -> None:
    r = run(
        """
        nodes:
          - {id: each, forEach: "{{ [] }}", task: {type: noop}}
        """
    )
    assert r.node_events("each") == ["each.started", "each.completed"]
    assert r.result.nodes["each"].outputs == {"results": []}


def _odd_fails(x: int) -> dict[str, Any]:
    if x % 2:
        raise Fatal(f"odd {x}")
    return {"x": x}


def _foreach(mode: str) -> Any:
    return run(
        f"""
        nodes:
          - id: each
            forEach: "{{{{ [0, 1, 2, 3] }}}}"
            maxParallel: 1
            onItemError: {mode}
            task: {{type: python, callable: odd}}
            inputBindings: {{x: "{{{{ item }}}}"}}
        """,
        {"odd": _odd_fails},
    )


def test_on_item_error_fail_stops_at_the_first_failed_item() -> None:
    r = _foreach("fail")
    assert r.node_events("each") == [
        "each.started",
        "each.item_completed",
        "each.item_failed",
        "each.failed",
    ]
    assert "item 1 failed" in r.payloads("each.failed")[0]["message"]


def test_on_item_error_continue_keeps_a_hole_for_failed_items() -> None:
    r = _foreach("continue")
    assert r.status("each") == "completed"
    assert r.result.nodes["each"].outputs == {"results": [{"x": 0}, None, {"x": 2}, None]}
    assert r.node_events("each").count("each.item_failed") == 2


def test_on_item_error_drop_leaves_failed_items_out() -> None:
    r = _foreach("drop")
    assert r.result.nodes["each"].outputs == {"results": [{"x": 0}, {"x": 2}]}


def test_bindings_give_native_values_and_render_text_once() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}, inputBindings: {n: 41, s: "{{ '{{ 7*7 }}' }}", xs: [1, 2]}}
          - id: b
            task: {type: noop}
            inputBindings:
              n: "{{ a.n + 1 }}"
              text: "n={{ a.n }}"
              s: "{{ a.s }}"
              nested: {first: "{{ a.xs[0] }}", all: ["{{ a.xs }}"]}
        """
    )
    assert r.result.nodes["b"].outputs == {
        "n": 42,
        "text": "n=41",
        "s": "{{ 7*7 }}",
        "nested": {"first": 1, "all": [[1, 2]]},
    }


def test_a_binding_to_a_missing_value_fails_the_node_clearly() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
          - {id: b, task: {type: noop}, inputBindings: {x: "{{ a.nothing }}"}}
        """
    )
    assert r.node_events("b") == ["b.failed"]
    message = r.payloads("b.failed")[0]["message"]
    assert "'b'" in message
    assert "'x'" in message
    assert "never written" in message


def test_binding_type_mismatch_names_node_input_and_both_types() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}, inputBindings: {n: "abc"}}
          - id: b
            task: {type: noop, inputs: {count: {type: integer, required: true}}}
            inputBindings: {count: "{{ a.n }}"}
        """
    )
    message = r.payloads("b.failed")[0]["message"]
    assert "'b'" in message
    assert "'count'" in message
    assert "integer" in message
    assert "string" in message


def test_idempotency_key_is_stable_across_attempts_and_attempt_fences() -> None:
    seen: list[tuple[str, int]] = []

    def task(ctx: Any) -> dict[str, Any]:
        seen.append((ctx.idempotency_key, ctx.attempt))
        if ctx.attempt < 3:
            raise Transient("again")
        return {}

    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: task}, retry: {maxAttempts: 3, delay: 0s}}
        """,
        {"task": task},
    )
    key = f"{r.result.execution_id}/a"
    assert seen == [(key, 1), (key, 2), (key, 3)]


def test_pipeline_outputs_and_large_values_go_to_the_artifact_store() -> None:
    def big() -> dict[str, Any]:
        return {"blob": "x" * 5000, "small": 1}

    async def scenario() -> None:
        r = await run_async(
            """
            nodes:
              - {id: a, task: {type: python, callable: big}}
              - {id: b, task: {type: noop}, inputBindings: {size: "{{ a.blob | length }}"}}
            outputs:
              size: "{{ b.size }}"
              small: "{{ a.small }}"
            """,
            {"big": big},
            offload_bytes=1024,
        )
        assert r.result.outputs == {"size": 5000, "small": 1}
        blob = next(
            rec.variable
            for rec in r.store.records
            if isinstance(rec, VariableWritten) and rec.variable.name == "blob"
        )
        assert blob.value is None
        assert blob.artifact is not None
        assert blob.artifact.size == 5002

    asyncio.run(scenario())


def test_every_attempt_is_recorded() -> None:
    from whenflow.domain.records import AttemptRecorded

    r = run(
        """
        nodes:
          - {id: flaky, task: {type: python, callable: flaky}, retry: {maxAttempts: 3, delay: 0s}}
        """,
        {"flaky": failing_until(2)},
    )
    finished = [
        (rec.attempt, rec.status.value)
        for rec in r.store.records
        if isinstance(rec, AttemptRecorded) and rec.finished_at is not None
    ]
    assert finished == [(1, "failed"), (2, "completed")]


def test_fail_fast_says_why_the_execution_failed() -> None:
    def bad() -> dict[str, Any]:
        raise Fatal("x")

    r = run(
        """
        failFast: true
        nodes:
          - {id: bad, task: {type: python, callable: bad}}
          - {id: long, task: {type: python, callable: forever}}
        """,
        {"bad": bad, "forever": forever},
    )
    assert r.result.error is not None
    assert "failFast" in r.result.error
    assert "'bad'" in r.result.error


def test_pipeline_outputs_that_are_not_json_fail_the_execution_cleanly() -> None:
    r = run(
        """
        nodes:
          - {id: a, task: {type: noop}}
        outputs:
          whole_node: "{{ a }}"
        """
    )
    assert r.result.status.value == "failed"
    assert r.result.error is not None
    assert "JSON" in r.result.error
    assert r.events[-1] == "pipeline.failed"


def test_a_required_input_with_a_default_takes_the_default() -> None:
    from whenflow.domain.definitions import ParamSpec
    from whenflow.domain.param_types import resolve_inputs

    declared = {"n": ParamSpec(type="integer", required=True, default=3)}
    assert resolve_inputs(declared, {}) == {"n": 3}
    assert resolve_inputs(declared, {"n": "5"}) == {"n": 5}


def test_a_path_output_that_does_not_exist_fails_the_attempt_not_the_engine(
    tmp_path: Any,
) -> None:
    from pathlib import Path

    def returns_nothing() -> dict[str, Any]:
        return {"out": Path(tmp_path) / "never-written"}

    r = run("nodes:\n  - {id: a, task: {type: python, callable: f}}\n", {"f": returns_nothing})
    assert r.events == ["pipeline.started", "a.started", "a.failed", "pipeline.failed"]
    assert "neither a file nor a directory" in r.payloads("a.failed")[0]["message"]


def test_a_directory_output_is_stored_and_read_downstream(tmp_path: Any) -> None:
    from pathlib import Path

    def writes_tree() -> dict[str, Any]:
        root = Path(tmp_path) / "partitions"
        (root / "day=1").mkdir(parents=True)
        (root / "day=1" / "part.csv").write_text("a,b\n1,2\n")
        (root / "README").write_text("two files")
        return {"out": root}

    def reads_tree(path: str) -> dict[str, Any]:
        return {"csv": (Path(path) / "day=1" / "part.csv").read_text()}

    r = run(
        """
        nodes:
          - {id: a, task: {type: python, callable: writes}}
          - {id: b, task: {type: python, callable: reads}, inputBindings: {path: "{{ a.out }}"}}
        """,
        {"writes": writes_tree, "reads": reads_tree},
    )
    assert r.status("b") == "completed"
    assert r.result.nodes["b"].outputs == {"csv": "a,b\n1,2\n"}
    (variable,) = [
        rec.variable
        for rec in r.store.records
        if isinstance(rec, VariableWritten) and rec.variable.scope == "a"
    ]
    assert variable.type == "directory"
    assert variable.artifact is not None
    assert variable.artifact.kind == "directory"
    assert r.result.nodes["a"].outputs["out"]["kind"] == "directory"  # results show the ref


def test_file_outputs_are_copied_off_the_dispatchers_loop(tmp_path: Any) -> None:
    """A file may be large and the store remote: the copy runs in a worker thread."""
    import threading
    from pathlib import Path

    from engine_harness import program

    from whenflow.engine.orchestrator import Orchestrator
    from whenflow.testing import InlineRunner, InMemoryArtifactStore, InMemoryStateStore

    copied_on: list[str] = []

    class WatchedArtifacts(InMemoryArtifactStore):
        def put_file(self, key: str, path: str) -> Any:
            copied_on.append(threading.current_thread().name)
            return super().put_file(key, path)

    def writes(index: int = -1) -> dict[str, Any]:
        out = Path(tmp_path) / f"out{index}.txt"
        out.write_text(f"rows {index}")
        return {"out": out}

    spec = """
    nodes:
      - {id: a, task: {type: python, callable: writes}}
      - {id: b, forEach: "{{ [1, 2] }}", task: {type: python, callable: writes},
         inputBindings: {index: "{{ item }}"}}
      - {id: c, task: {type: python, callable: reads}, inputBindings: {path: "{{ a.out }}"}}
    """
    artifacts = WatchedArtifacts()
    store = InMemoryStateStore()
    functions = {"writes": writes, "reads": lambda path: {"text": Path(path).read_text()}}
    orch = Orchestrator(
        program(spec, functions), store=store, runner=InlineRunner(functions), artifacts=artifacts
    )

    result = asyncio.run(orch.run())

    assert result.status.value == "completed"
    assert result.nodes["c"].outputs == {"text": "rows -1"}
    assert len(copied_on) == 3
    assert threading.main_thread().name not in copied_on
    (a_out,) = [
        r.variable
        for r in store.records
        if isinstance(r, VariableWritten) and r.variable.scope == "a"
    ]
    assert a_out.artifact is not None
    # the key stays <execution>/<node>/<output>/<file name>
    assert a_out.artifact.uri.endswith(f"{orch.execution_id}__a__out__out-1.txt")


def test_a_stop_condition_error_while_waiting_for_a_retry_fails_the_node() -> None:
    def flaky() -> dict[str, Any]:
        raise Transient("first attempt fails")

    r = run(
        """
        nodes:
          - id: b
            task: {type: python, callable: flaky}
            retry: {maxAttempts: 2, delay: 60s}
            stopWhen: "{{ a.n + 1 > 5 }}"
          - {id: a, startWhen: "event:b.retrying", task: {type: noop}}
        """,
        {"flaky": flaky},
    )
    assert r.node_events("b") == ["b.started", "b.retrying", "b.failed"]
    assert r.payloads("b.failed")[0]["error_type"] == "ExpressionError"


def test_attempt_rows_keep_their_start_and_close_when_items_are_cancelled() -> None:
    from whenflow.domain.records import AttemptRecorded

    def bad(x: int) -> dict[str, Any]:
        raise Fatal("bad item")

    r = run(
        """
        failFast: true
        nodes:
          - id: fan
            forEach: "{{ [0, 1] }}"
            task: {type: python, callable: forever}
          - {id: bad, startWhen: "event:fan.started", task: {type: python, callable: bad}, inputBindings: {x: 1}}
        """,
        {"forever": forever, "bad": bad},
    )
    final: dict[tuple[str, int, int], AttemptRecorded] = {}
    for rec in r.store.records:
        if isinstance(rec, AttemptRecorded):
            final[(rec.node_id, rec.item_index, rec.attempt)] = rec
    assert {k: v.status.value for k, v in final.items() if k[0] == "fan"} == {
        ("fan", 0, 1): "cancelled",
        ("fan", 1, 1): "cancelled",
    }
    for rec in final.values():
        assert rec.finished_at is not None
        assert rec.started_at <= rec.finished_at
    started = [
        rec.started_at
        for rec in r.store.records
        if isinstance(rec, AttemptRecorded) and rec.node_id == "fan" and rec.finished_at is None
    ]
    assert sorted(started) == sorted(v.started_at for k, v in final.items() if k[0] == "fan")


def test_results_star_projects_a_field_of_every_item() -> None:
    r = run(
        """
        nodes:
          - id: sq
            forEach: "{{ [1, 2, 3] }}"
            task: {type: noop}
            inputBindings: {y: "{{ item * item }}"}
          - id: total
            task: {type: noop}
            inputBindings:
              ys: "{{ sq.results[*].y }}"
              text: "sum={{ sq.results[*].y | sum }}"
        outputs:
          ys: "{{ sq.results[*].y }}"
        """
    )
    assert r.result.nodes["total"].outputs == {"ys": [1, 4, 9], "text": "sum=14"}
    assert r.result.outputs == {"ys": [1, 4, 9]}


def test_for_each_item_outputs_and_results_respect_the_offload_threshold() -> None:
    def big(x: int) -> dict[str, Any]:
        return {"blob": "x" * 500, "x": x}

    async def scenario() -> None:
        r = await run_async(
            """
            nodes:
              - id: fan
                forEach: "{{ [1, 2] }}"
                task: {type: python, callable: big}
                inputBindings: {x: "{{ item }}"}
              - {id: after, task: {type: noop}, inputBindings: {xs: "{{ fan.results[*].x }}"}}
            """,
            {"big": big},
            offload_bytes=100,
        )
        assert r.result.nodes["after"].outputs == {"xs": [1, 2]}
        written = [rec.variable for rec in r.store.records if isinstance(rec, VariableWritten)]
        items = [v for v in written if v.scope == "fan#item"]
        assert len(items) == 2
        for v in items:
            assert set(v.value["blob"]) == {"$artifact"}  # a reference, not 500 bytes
            assert v.value["x"] in (1, 2)
        results = next(v for v in written if v.scope == "fan" and v.name == "results")
        assert results.value is None
        assert results.artifact is not None

    asyncio.run(scenario())


async def test_an_output_the_store_cannot_take_fails_its_node_instead_of_hanging(
    tmp_path: Any,
) -> None:
    """A directory with a link to an absolute path packs, but is refused on unpack."""
    from pathlib import Path

    from engine_harness import program

    from whenflow.engine.orchestrator import Orchestrator
    from whenflow.storage.artifacts import FsspecArtifactStore
    from whenflow.testing import InlineRunner, InMemoryStateStore

    def linked() -> dict[str, object]:
        out = Path(tmp_path) / "out"
        out.mkdir()
        (out / "host").symlink_to("/etc/hostname")
        return {"out": out}

    functions = {"linked": linked}
    orch = Orchestrator(
        program("nodes: [{id: a, task: {type: python, callable: linked}}]", functions),
        store=InMemoryStateStore(),
        runner=InlineRunner(functions),
        artifacts=FsspecArtifactStore(f"{tmp_path}/artifacts", f"{tmp_path}/cache"),
    )
    result = await orch.run()
    assert result.nodes["a"].status.value == "failed"
    assert "not a safe directory archive" in (result.nodes["a"].error or "")
