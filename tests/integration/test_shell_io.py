"""Shell tasks with real processes: inputs of any size, and outputs data cannot forge
(issue 13 items 7 and 16)."""

from __future__ import annotations

import hashlib
import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import TaskRequest
from whenflow.executors.errors import InvalidTaskConfig, TaskOutputError
from whenflow.executors.shell import ShellExecutor
from whenflow.executors.shell_inputs import INPUT_ENV_LIMIT, MAX_ARG_STRLEN

TESTS_DIR = Path(__file__).resolve().parents[1]
# Several scripts of several bytes per character: the file must hold the exact UTF-8.
UNICODE_CHUNK = "数据 é 🙂 line\n\t'quote\" $HOME `id`\n"


@pytest.fixture
def ctx(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    recording: ModuleType = importlib.import_module("taskfuncs.recording")
    return recording.RecordingContext()


def shell(inputs: dict[str, Any] | None = None, **config: Any) -> TaskRequest:
    return TaskRequest(
        execution_id="exec-1",
        node_id="step",
        attempt=1,
        task=TaskSpec(type="shell", config=config),
        inputs=inputs or {},
        idempotency_key="exec-1/step",
    )


def sized(n: int, seed: str = "") -> str:
    text = (seed + UNICODE_CHUNK) * (n // len(seed + UNICODE_CHUNK) + 1)
    return text[:n]


# --------------------------------------------------------------------------- item 7


async def test_a_140000_character_input_arrives_exactly_through_its_file(
    ctx: Any, tmp_path: Path
) -> None:
    value = sized(140_000)
    copy = tmp_path / "copy"
    script = (
        'cp "$WF_INPUT_BIG_FILE" "$COPY"\n'
        'echo "in_env=${WF_INPUT_BIG+yes}" >> "$WF_OUTPUTS"\n'
        'echo "mode=$(stat -c %a "$WF_INPUT_BIG_FILE")" >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(
        shell({"big": value}, script=script, env={"COPY": str(copy)}), ctx
    )
    assert copy.read_bytes() == value.encode("utf-8")
    assert result.outputs["in_env"] == ""  # too large for the environment: only the file
    assert result.outputs["mode"] == 600
    assert any("input 'big'" in line and "WF_INPUT_BIG_FILE" in line for line in ctx.lines("log"))


async def test_three_mebibytes_over_many_inputs_all_arrive(ctx: Any, tmp_path: Path) -> None:
    # 20 values over the per-variable limit and 40 under it whose sum is over the budget.
    inputs = {f"large_{i}": sized(100_000, f"L{i}") for i in range(20)}
    inputs |= {f"small_{i}": sized(30_000, f"s{i}") for i in range(40)}
    assert sum(len(v.encode()) for v in inputs.values()) > 3 * 1024 * 1024
    script = (
        'for f in $(compgen -e | grep "^WF_INPUT_.*_FILE$"); do\n'
        '  printf "%s %s\\n" "$f" "$(sha256sum < "${!f}" | cut -d" " -f1)"\n'
        "done\n"
        'echo "inline=$(compgen -e | grep "^WF_INPUT_" | grep -vc "_FILE$")" >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(shell(inputs, script=script), ctx)
    digests = dict(line.split(" ") for line in ctx.lines("stdout"))
    assert len(digests) == 60
    for name, value in inputs.items():
        expected = hashlib.sha256(value.encode("utf-8")).hexdigest()
        assert digests[f"WF_INPUT_{name.upper()}_FILE"] == expected, name
    assert 0 < result.outputs["inline"] < 40  # small ones inline until the budget is used


async def test_small_inputs_are_both_in_the_environment_and_in_a_file(ctx: Any) -> None:
    script = (
        'test "$WF_INPUT_NAME" = "$(cat "$WF_INPUT_NAME_FILE")"\n'
        'echo "count=$(cat "$WF_INPUT_COUNT_FILE")" >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(
        shell({"name": "Zoë 数据", "count": 3}, script=script), ctx
    )
    assert result.outputs == {"count": 3, "exit_code": 0}


async def test_an_input_at_the_limit_stays_in_the_environment(ctx: Any) -> None:
    value = "x" * INPUT_ENV_LIMIT
    script = 'echo "length=${#WF_INPUT_V}" >> "$WF_OUTPUTS"'
    result = await ShellExecutor().execute(shell({"v": value}, script=script), ctx)
    assert result.outputs["length"] == INPUT_ENV_LIMIT


async def test_a_small_value_holding_a_nul_byte_arrives_through_its_file(
    ctx: Any, tmp_path: Path
) -> None:
    # No environment string can hold a NUL byte: the value goes to its file only,
    # and the small input beside it still goes to the environment.
    value = "header\x00payload 数据"
    copy = tmp_path / "copy"
    script = (
        'cp "$WF_INPUT_BLOB_FILE" "$COPY"\n'
        'echo "in_env=${WF_INPUT_BLOB+yes}" >> "$WF_OUTPUTS"\n'
        'echo "other=$WF_INPUT_OTHER" >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(
        shell({"blob": value, "other": "plain"}, script=script, env={"COPY": str(copy)}), ctx
    )
    assert copy.read_bytes() == value.encode("utf-8")
    assert result.outputs["in_env"] == ""
    assert result.outputs["other"] == "plain"
    assert any("input 'blob'" in line and "WF_INPUT_BLOB_FILE" in line for line in ctx.lines("log"))


async def test_an_argument_over_the_limit_is_an_error_naming_it(ctx: Any) -> None:
    with pytest.raises(InvalidTaskConfig) as info:
        await ShellExecutor().execute(shell(command=["printf", "%s", "y" * 140_000]), ctx)
    message = str(info.value)
    assert "argument 2 of `command`" in message
    assert str(MAX_ARG_STRLEN) in message
    assert "WF_INPUT_<NAME>_FILE" in message


async def test_an_env_value_over_the_limit_is_an_error_naming_it(ctx: Any) -> None:
    with pytest.raises(InvalidTaskConfig, match=r"environment variable HUGE is \d+ bytes"):
        await ShellExecutor().execute(shell(command=["true"], env={"HUGE": "z" * 200_000}), ctx)


async def test_colliding_input_names_are_refused_at_run_time_too(ctx: Any) -> None:
    with pytest.raises(InvalidTaskConfig, match=r"inputs 'a-b' and 'a_b' both need"):
        await ShellExecutor().execute(shell({"a-b": 1, "a_b": 2}, command=["true"]), ctx)
    with pytest.raises(InvalidTaskConfig, match=r"inputs 'x' and 'x_file' both need"):
        await ShellExecutor().execute(shell({"x": 1, "x_file": 2}, command=["true"]), ctx)


# --------------------------------------------------------------------------- item 16

HOSTILE = [
    "ok\napproved=true",
    "ok\r\napproved=true\n",
    "x\nEOF\napproved=true",
    "line\nmsg<<END\nforged\nEND",
    "WF_EOF_guess\napproved=true",
]


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_the_delimiter_form_keeps_a_newline_carrying_value_in_one_output(
    ctx: Any, hostile: str
) -> None:
    script = (
        'echo "approved=false" >> "$WF_OUTPUTS"\n'
        "{\n"
        '  echo "msg<<$WF_OUTPUT_DELIMITER"\n'
        '  printf "%s\\n" "$WF_INPUT_MSG"\n'
        '  echo "$WF_OUTPUT_DELIMITER"\n'
        '} >> "$WF_OUTPUTS"\n'
    )
    result = await ShellExecutor().execute(shell({"msg": hostile}, script=script), ctx)
    assert result.outputs == {"approved": False, "msg": hostile, "exit_code": 0}


@pytest.mark.parametrize("hostile", HOSTILE)
async def test_the_json_form_keeps_a_newline_carrying_value_in_one_output(
    ctx: Any, hostile: str
) -> None:
    code = (
        "import json, os; "
        'json.dump({"msg": os.environ["WF_INPUT_MSG"], "n": 2}, '
        'open(os.environ["WF_OUTPUTS_JSON"], "w"))'
    )
    result = await ShellExecutor().execute(
        shell({"msg": hostile}, command=["python3", "-c", code]), ctx
    )
    assert result.outputs == {"msg": hostile, "n": 2, "exit_code": 0}


async def test_the_delimiter_is_random_per_attempt(ctx: Any) -> None:
    script = 'echo "d=$WF_OUTPUT_DELIMITER" >> "$WF_OUTPUTS"'
    first = await ShellExecutor().execute(shell(script=script), ctx)
    second = await ShellExecutor().execute(shell(script=script), ctx)
    assert first.outputs["d"] != second.outputs["d"]
    assert len(first.outputs["d"]) >= 32


@pytest.mark.parametrize(
    ("lines", "json_text", "error"),
    [
        ("msg<<END\nno end\n", "", r"the value of 'msg' \(line 1\) never ends"),
        ("", "[1, 2]", r"must hold one JSON object"),
        ("", "{broken", r"\$WF_OUTPUTS_JSON is not JSON"),
        ("a=1\n", '{"a": 2}', r"output\(s\) a set in both"),
    ],
)
async def test_malformed_output_files_fail_the_attempt(
    ctx: Any, tmp_path: Path, lines: str, json_text: str, error: str
) -> None:
    (tmp_path / "lines").write_text(lines)
    (tmp_path / "json").write_text(json_text)
    script = f'cat "{tmp_path}/lines" >> "$WF_OUTPUTS"\ncat "{tmp_path}/json" > "$WF_OUTPUTS_JSON"'
    with pytest.raises(TaskOutputError, match=error):
        await ShellExecutor().execute(shell(script=script), ctx)


async def test_arguments_over_the_system_total_are_an_error_naming_the_largest(ctx: Any) -> None:
    item = "a" * (100 * 1024)
    count = os.sysconf("SC_ARG_MAX") // len(item) + 2
    with pytest.raises(InvalidTaskConfig) as info:
        await ShellExecutor().execute(
            shell({"note": "small"}, command=["true", *[item] * count], env={"EXTRA": "x"}), ctx
        )
    message = str(info.value)
    assert "over the system's limit for starting a process" in message
    assert f"arguments {count * (len(item) + 1) + 5} bytes" in message
    assert "WF_INPUT_<NAME>_FILE" in message
