"""`@whenflow.task`: the TaskDefinition derived from a function's type hints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, NotRequired, TypedDict

import pytest

from whenflow.domain.definitions import ParamSpec
from whenflow.domain.errors import DefinitionError
from whenflow.executors.task_decorator import definition_of, param_type, task


class Report(TypedDict):
    rows: int
    path: Path
    note: NotRequired[str]


class Partial(TypedDict, total=False):
    score: float


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (str, "string"),
        (int, "integer"),
        (float, "number"),
        (bool, "boolean"),
        (dict, "object"),
        (dict[str, int], "object"),
        (Mapping[str, Any], "object"),
        (Report, "object"),
        (list, "array"),
        (list[int], "array"),
        (tuple[int, ...], "array"),
        (Sequence[str], "array"),
        (set[int], "array"),
        (Path, "file"),
        (Any, "any"),
        (int | None, "integer"),
        (int | float, "number"),
        (int | str, "any"),
        (Literal["a", "b"], "string"),
        (Annotated[int, "meta"], "integer"),
        (bytes, "any"),
        (object, "any"),
    ],
)
def test_hints_map_to_param_types(hint: Any, expected: str) -> None:
    assert param_type(hint) == expected


def test_inputs_come_from_parameters() -> None:
    @task
    def extract(
        ctx: Any,
        source: str,
        limit: int = 10,
        ratio: float | None = None,
        tags: list[str] | None = None,
        target: Path = Path("out.csv"),
        anything=None,  # type: ignore[no-untyped-def]
        when: object = object(),
    ) -> Report:
        """Extract rows.

        Args:
            source: Where the rows come from.
            limit (int): At most this many.
        """
        raise NotImplementedError

    definition = definition_of(extract)
    assert definition is not None
    signature = definition.task.signature
    assert signature is not None
    assert "ctx" not in signature.inputs
    assert signature.inputs == {
        "source": ParamSpec(type="string", required=True, description="Where the rows come from."),
        "limit": ParamSpec(
            type="integer", required=False, default=10, description="At most this many."
        ),
        "ratio": ParamSpec(type="number"),
        "tags": ParamSpec(type="array"),
        "target": ParamSpec(type="file", default="out.csv"),
        "anything": ParamSpec(type="any"),
        "when": ParamSpec(type="any", default=None),  # not JSON: dropped
    }
    assert signature.outputs == {
        "rows": ParamSpec(type="integer", required=True),
        "path": ParamSpec(type="file", required=True),
        "note": ParamSpec(type="string", required=False),
    }
    assert definition.description == "Extract rows."
    assert definition.name == "extract"
    assert definition.version == "0.1.0"


def test_the_task_spec_names_the_callable_and_the_function_stays_callable() -> None:
    @task(name="doubler", version="2.0.1", description="Doubles.")
    def double(x: int) -> int:
        return 2 * x

    assert double(4) == 8
    definition = definition_of(double)
    assert definition is not None
    assert definition.ref == "doubler@2.0.1"
    assert definition.description == "Doubles."
    assert definition.task.type == "python"
    assert definition.task.config == {"callable": f"{__name__}:{double.__qualname__}"}
    assert definition.task.signature is not None
    assert definition.task.signature.outputs == {"result": ParamSpec(type="integer", required=True)}


@pytest.mark.parametrize(
    ("returns", "outputs"),
    [
        (dict, {}),
        (dict[str, Any], {}),
        (Mapping[str, int], {}),
        (None, {}),
        (Partial, {"score": ParamSpec(type="number", required=False)}),
        (list[str], {"result": ParamSpec(type="array", required=True)}),
        (str | None, {"result": ParamSpec(type="string", required=False)}),
        (Any, {"result": ParamSpec(type="any", required=True)}),
    ],
)
def test_outputs_come_from_the_return_annotation(returns: Any, outputs: dict[str, Any]) -> None:
    def fn() -> None:
        return None

    fn.__annotations__["return"] = returns
    decorated = task(fn)
    definition = definition_of(decorated)
    assert definition is not None
    assert definition.task.signature is not None
    assert definition.task.signature.outputs == outputs


def test_an_unannotated_return_declares_no_outputs_and_async_uses_the_awaited_type() -> None:
    @task
    def untyped(a):  # type: ignore[no-untyped-def]
        return {"a": a}

    @task
    async def fetch(url: str) -> bool:
        return True

    untyped_def, fetch_def = definition_of(untyped), definition_of(fetch)
    assert untyped_def is not None
    assert fetch_def is not None
    assert untyped_def.task.signature is not None
    assert untyped_def.task.signature.outputs == {}
    assert untyped_def.task.signature.inputs == {"a": ParamSpec(type="any", required=True)}
    assert fetch_def.task.signature is not None
    assert fetch_def.task.signature.outputs == {"result": ParamSpec(type="boolean", required=True)}


def test_plain_functions_have_no_definition() -> None:
    def plain() -> None:
        return None

    assert definition_of(plain) is None


def test_unusable_functions_are_definition_errors() -> None:
    with pytest.raises(DefinitionError, match="version 'one' is not semantic"):

        @task(version="one")
        def versioned() -> None:
            return None

    with pytest.raises(DefinitionError, match="'x' is positional-only"):

        @task
        def positional(x: int, /) -> None:
            return None


def test_emits_are_declared_on_the_signature() -> None:
    @task(emits=["tick", "price_changed", "tick"])
    def feed(ctx: Any) -> None:
        ctx.emit("tick")

    definition = definition_of(feed)
    assert definition is not None
    assert definition.task.signature is not None
    assert definition.task.signature.emits == ("tick", "price_changed")


@pytest.mark.parametrize(
    ("emits", "message"),
    [
        (["completed"], "'completed' is a lifecycle event"),
        (["Tick"], "'Tick' is not an event name"),
        ("tick", "must be a list of event names"),
    ],
)
def test_bad_emits_are_refused_when_decorating(emits: Any, message: str) -> None:
    def feed() -> None:
        return None

    with pytest.raises(DefinitionError, match=message):
        task(emits=emits)(feed)
