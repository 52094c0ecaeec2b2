"""WHENFLOW_DURABILITY through the real CLI."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import EXAMPLES, run_cli, run_json


def test_a_run_at_power_durability_completes(tmp_path: Path) -> None:
    result = run_json(
        tmp_path,
        "run",
        EXAMPLES / "branch_and_join.yaml",
        "-i",
        "amount=5",
        env={"WHENFLOW_DURABILITY": "power"},
    )
    assert result["status"] == "completed"


def test_a_bad_durability_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = run_cli(
        tmp_path,
        "run",
        EXAMPLES / "branch_and_join.yaml",
        "-i",
        "amount=5",
        env={"WHENFLOW_DURABILITY": "always"},
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: WHENFLOW_DURABILITY='always' is not a durability level; set process (a commit "
        "survives the process dying, the default) or power (it survives a power loss too)"
    ]
