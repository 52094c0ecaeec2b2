"""What the terminal shows: strict JSON, whole ids, progress with the id, help in user words."""

from __future__ import annotations

import io
import json
import math
import re
from typing import Any

import pytest
import typer.main
from rich.console import Console
from typer.testing import CliRunner

from whenflow import __version__
from whenflow.cli.main import app
from whenflow.cli.output import json_text, table_text
from whenflow.cli.progress import Progress, ProgressModel
from whenflow.domain.definitions import ParamSpec
from whenflow.domain.errors import InputError
from whenflow.domain.events import Event
from whenflow.domain.param_types import coerce_input

EID = "0e2ff55a-ff71-4946-a0ca-a5a0649f88da"


def _strict(text: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_text_prints_non_ascii_as_itself() -> None:
    text = json_text({"城市": "北京", "list": ["数据", "é"]})

    assert "北京" in text
    assert "城市" in text
    assert "数据" in text
    assert "\\u" not in text
    assert _strict(text) == {"城市": "北京", "list": ["数据", "é"]}


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_become_null_and_the_document_parses_strictly(bad: float) -> None:
    value = {"score": bad, "nested": [1.5, {"x": bad}], "ok": 2.0, "t": (bad,)}

    parsed = _strict(json_text(value, indent=2))

    assert parsed == {"score": None, "nested": [1.5, {"x": None}], "ok": 2.0, "t": [None]}


def test_json_text_keeps_finite_documents_unchanged() -> None:
    value = {"a": 1, "b": [0.25, None, True], "c": "text"}
    assert json_text(value) == json.dumps(value)


def test_a_table_never_cuts_a_cell() -> None:
    long_id = EID + "-and-more"
    text = table_text(("execution", "pipeline"), [(long_id, "p"), ("short", "a-much-longer-name")])

    lines = text.splitlines()
    assert lines[0].split() == ["execution", "pipeline"]
    assert lines[1].split() == [long_id, "p"]
    assert lines[2].split() == ["short", "a-much-longer-name"]
    assert lines[1].index("p") == lines[2].index("a-much")  # aligned columns


def _event(event_type: str, seq: int, **payload: Any) -> Event:
    return Event(f"e{seq}", EID, seq, event_type, event_type.split(".")[0], 0.0, payload)


def test_the_live_table_shows_the_id_and_the_exact_decide_command() -> None:
    model = ProgressModel(["build", "review"], EID)
    model.apply(_event("build.started", 1, attempt=1))
    console = Console(width=60, record=True, file=io.StringIO())

    console.print(model.render())
    before = console.export_text()
    model.apply(_event("review.waiting", 2, message="Ship it?"))
    console.print(model.render())
    after = console.export_text()

    assert f"execution {EID}" in before.replace("\n", "")
    assert "whenflow approve" not in before
    flat = re.sub(r"\s+", " ", after)
    assert f"whenflow approve {EID} review" in flat
    assert f"whenflow reject {EID} review" in flat


def test_plain_progress_starts_with_the_id_and_names_the_decide_command() -> None:
    stream = io.StringIO()
    with Progress(["review"], execution_id=EID, stream=stream) as progress:
        progress.on_event(_event("review.waiting", 1, message="Ship it?"))

    lines = [line.split(" ", 1)[1] for line in stream.getvalue().splitlines()]
    assert lines[0] == f"execution {EID}"
    assert lines[1] == (
        f"review waiting: Ship it?; decide with `whenflow approve {EID} review` "
        f"or `whenflow reject {EID} review`"
    )


def test_resume_progress_lists_nodes_as_their_events_arrive() -> None:
    model = ProgressModel([], EID)  # `resume` does not know the node ids up front

    model.apply(_event("pipeline.resumed", 1))
    model.apply(_event("review.waiting", 2, message="Ship it?"))
    model.apply(_event("external.go", 3))
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(model.render())

    assert list(model.rows) == ["review"]
    assert f"whenflow approve {EID} review" in console.export_text()


class _ClosedPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_progress_to_a_closed_pipe_stops_printing_instead_of_failing_the_run() -> None:
    with Progress(["a"], execution_id=EID, stream=_ClosedPipe()) as progress:
        progress.on_event(_event("a.started", 1, attempt=1))
        progress.on_event(_event("a.completed", 2))

    assert progress.model.rows["a"].state == "completed"


def _command_paths() -> list[list[str]]:
    paths: list[list[str]] = [[]]

    def walk(command: Any, prefix: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            paths.append([*prefix, name])
            walk(sub, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


PYTHON_WORDS = re.compile(r"<(str|bool|int|float|path|Path)>|list\[|<class|Optional\[|NoneType")


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "whenflow")
def test_help_shows_user_words_not_python_types(path: list[str]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "200"})

    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert not PYTHON_WORDS.search(result.output), result.output


def test_help_names_option_values_in_user_words() -> None:
    run_help = CliRunner().invoke(app, ["run", "--help"], env={"COLUMNS": "200"}).output
    list_help = CliRunner().invoke(app, ["executions", "list", "--help"], env={"COLUMNS": "200"})

    assert "NAME=VALUE" in run_help
    assert "FILE" in run_help
    assert "EXECUTION_ID" in run_help
    assert "STATUS" in list_help.output
    assert " N " in list_help.output


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])

    assert result.exit_code == 0
    assert result.output == f"whenflow {__version__}\n"


@pytest.mark.parametrize(
    ("raw", "text"), [(456, "456"), (4.5, "4.5"), (True, "true"), (False, "false"), (0, "0")]
)
def test_a_number_or_boolean_into_a_string_input_becomes_its_text(raw: Any, text: str) -> None:
    # What `-i name=<text>` would have given: the two ways in agree.
    spec = ParamSpec(type="string")
    assert coerce_input("s", raw, spec) == text
    assert coerce_input("s", text, spec) == text


@pytest.mark.parametrize("raw", [{"a": 1}, [1, 2], None])
def test_structures_into_a_string_input_stay_an_error(raw: Any) -> None:
    with pytest.raises(InputError, match="expected string"):
        coerce_input("s", raw, ParamSpec(type="string"))


def test_text_into_typed_inputs_is_parsed_whatever_its_source() -> None:
    assert coerce_input("n", "456", ParamSpec(type="integer")) == 456
    assert coerce_input("n", 456, ParamSpec(type="integer")) == 456
    assert coerce_input("b", "true", ParamSpec(type="boolean")) is True
