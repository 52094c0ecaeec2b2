"""Fixtures of the unit tests that call the real python executor directly."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from types import ModuleType

import pytest
from python_task_harness import TESTS_DIR

from whenflow.executors.python import PythonExecutor


@pytest.fixture
def executor() -> Iterator[PythonExecutor]:
    """A python executor, closed (its threads and output capture undone) after the test."""
    python = PythonExecutor()
    yield python
    python.close()


@pytest.fixture
def unruly(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    """`taskfuncs.unruly`: task functions that misbehave, importable as a user's module."""
    monkeypatch.syspath_prepend(str(TESTS_DIR))
    return importlib.import_module("taskfuncs.unruly")
