"""Tasks of the retry_timeout example."""

from __future__ import annotations

from typing import Any


class TransientError(RuntimeError):
    """Stands for a network blip: worth retrying."""


def fail_until(succeed_on: int, attempt: int) -> dict[str, Any]:
    if attempt < succeed_on:
        raise TransientError(f"attempt {attempt} failed (succeeds on attempt {succeed_on})")
    return {"attempt": attempt}


def report(flaky_attempts: int, slow_timed_out: bool) -> dict[str, Any]:
    return {"flaky_attempts": flaky_attempts, "slow_timed_out": slow_timed_out}
