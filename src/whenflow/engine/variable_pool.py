"""The variable pool an execution's templates read (DESIGN.md §6).

Namespaces: `pipeline.input.<name>`, `<node_id>.<output>`, `system.*`. The
template context is built once and updated in place: a node's Namespace wraps
its live outputs dict, so a completed node's outputs are visible at once. A
forEach item sees `item` and `index` through a ChainMap overlay, never a copy.
"""

from __future__ import annotations

import json
import pathlib
from collections import ChainMap
from collections.abc import Callable, Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from whenflow.domain.errors import WhenflowError
from whenflow.domain.param_types import type_name
from whenflow.domain.variables import ArtifactRef, Variable
from whenflow.dsl.templates import Namespace
from whenflow.engine.ports import ArtifactStore

INPUT_SCOPE = "pipeline.input"
SYSTEM_SCOPE = "system"
DEFAULT_OFFLOAD_BYTES = 1024 * 1024
ARTIFACT_MARKER = "$artifact"  # wraps a reference stored inside a forEach item's value
VALUE_MARKER = "$value"  # wraps a plain value shaped like one of these markers


class OutputError(ValueError):
    """A task returned an output that cannot live in the pool."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file output already copied into the artifact store, off the dispatcher's loop."""

    ref: ArtifactRef
    local_path: str


def has_files(outputs: Mapping[str, Any]) -> bool:
    """Whether outputs name files, which `copy_files` should store before the unit of work."""
    return any(isinstance(v, pathlib.PurePath) for v in outputs.values())


class VariablePool:
    def __init__(
        self,
        *,
        execution_id: str,
        pipeline: str,
        version: str,
        inputs: Mapping[str, Any],
        node_ids: Sequence[str],
        started_at: float,
        artifacts: ArtifactStore | None,
        offload_bytes: int = DEFAULT_OFFLOAD_BYTES,
    ) -> None:
        self.execution_id = execution_id
        self.artifacts = artifacts
        self.conceal: Callable[[Any], Any] = _same
        """Masks revealed secrets in what goes to the artifact store (set by the dispatcher)."""
        self.offload_bytes = offload_bytes
        self.inputs = dict(inputs)
        self.system: dict[str, Any] = {
            "execution_id": execution_id,
            "pipeline": pipeline,
            "version": version,
            "started_at": started_at,
        }
        self.outputs: dict[str, dict[str, Any]] = {n: {} for n in node_ids}
        # Outputs kept in the artifact store: results show the reference, not the bytes.
        self.artifact_refs: dict[tuple[str, str], ArtifactRef] = {}
        # A node's file and directory outputs, which a reader verifies before it starts.
        self._file_refs: dict[str, dict[str, ArtifactRef]] = {}
        self.context: dict[str, Any] = {
            "pipeline": Namespace(
                "pipeline",
                {
                    "input": Namespace(INPUT_SCOPE, self.inputs),
                    "name": pipeline,
                    "version": version,
                },
            ),
            "system": Namespace(SYSTEM_SCOPE, self.system),
        }
        for node_id, values in self.outputs.items():
            self.context[node_id] = Namespace(node_id, values)

    def input_variables(self, at: float) -> list[Variable]:
        return [Variable(INPUT_SCOPE, k, v, type_name(v), at) for k, v in self.inputs.items()]

    def overlay(self, extra: Mapping[str, Any]) -> MutableMapping[str, Any]:
        """A view of the context with `item`/`index`/`system.attempt` on top."""
        return ChainMap(dict(extra), self.context)

    def copy_files(self, outputs: Mapping[str, Any], key_prefix: str) -> dict[str, Any]:
        """Copy every file output into the artifact store; the other outputs pass through.

        Blocking I/O (a file may be large, the store remote): the attempt runs
        it in a worker thread, and `store_outputs` then takes the StoredFile
        values as they are. Raises OutputError.
        """
        copied: dict[str, Any] = {}
        for name, value in outputs.items():
            if isinstance(value, pathlib.PurePath) and isinstance(name, str):
                ref = self._put_file(name, value, key_prefix)
                assert self.artifacts is not None
                try:
                    value = StoredFile(ref, self.artifacts.local_path(ref))
                except (OSError, WhenflowError) as exc:
                    raise OutputError(f"output {name!r}: cannot read it back: {exc}") from exc
            copied[name] = value
        return copied

    def _put_file(self, name: str, path: pathlib.PurePath, key_prefix: str) -> ArtifactRef:
        if self.artifacts is None:
            raise OutputError(f"output {name!r} is a path but no artifact store is set")
        local = pathlib.Path(path)
        key = f"{key_prefix}/{name}/{path.name}"
        try:
            if local.is_file():
                return self.artifacts.put_file(key, str(path))
            if local.is_dir():
                return self.artifacts.put_dir(key, str(path))
            raise OutputError(
                f"output {name!r} is the path {str(path)!r}, which is neither a file "
                "nor a directory"
            )
        except (OSError, WhenflowError) as exc:
            raise OutputError(f"output {name!r}: cannot store {str(path)!r}: {exc}") from exc

    def store_outputs(
        self,
        node_id: str,
        outputs: Mapping[str, Any],
        *,
        key_prefix: str,
        at: float,
        remember_refs: bool = True,
    ) -> tuple[dict[str, Any], list[Variable]]:
        """Turn task outputs into pool values and variables (files and big values to artifacts).

        Returns (the values templates will see, the variables to persist).
        Raises OutputError for a name or value that cannot be stored.
        """
        visible: dict[str, Any] = {}
        variables: list[Variable] = []
        for name, value in outputs.items():
            if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
                raise OutputError(
                    f"output name {name!r} must be an identifier not starting with '_'"
                )
            ref: ArtifactRef | None = None
            if isinstance(value, StoredFile):
                ref, value = value.ref, value.local_path
            elif isinstance(value, pathlib.PurePath):
                ref = self._put_file(name, value, key_prefix)
                assert self.artifacts is not None
                try:
                    value = self.artifacts.local_path(ref)
                except (OSError, WhenflowError) as exc:
                    raise OutputError(f"output {name!r}: cannot read it back: {exc}") from exc
            else:
                try:
                    encoded = json.dumps(value)
                except Exception as exc:  # also RecursionError: nested too deep
                    raise OutputError(
                        f"output {name!r} is a {type(value).__name__}, not JSON data: {exc}"
                    ) from None
                if len(encoded) > self.offload_bytes and self.artifacts is not None:
                    ref = self.artifacts.put_value(f"{key_prefix}/{name}", self.conceal(value))
            visible[name] = value
            if ref is not None and remember_refs:
                self._remember(node_id, name, ref)
            stored = None if ref is not None else value
            variables.append(
                Variable(
                    node_id,
                    name,
                    stored,
                    ref.kind if ref and ref.kind in ("file", "directory") else type_name(value),
                    at,
                    artifact=ref,
                )
            )
        return visible, variables

    def _remember(self, node_id: str, name: str, ref: ArtifactRef) -> None:
        self.artifact_refs[(node_id, name)] = ref
        if ref.kind != "value":
            self._file_refs.setdefault(node_id, {})[name] = ref  # a retry's ref replaces

    def file_refs(self, node_ids: Iterable[str]) -> list[ArtifactRef]:
        """The file and directory artifacts of the given nodes' published outputs.

        Only published outputs count: a failed attempt may have stored a file
        (under the key a retry reuses) before failing. No artifacts: no work.
        """
        if not self._file_refs:
            return []
        return [
            ref
            for n in node_ids
            for name, ref in self._file_refs.get(n, {}).items()
            if name in self.outputs.get(n, ())
        ]

    def verify_files(self, refs: Sequence[ArtifactRef]) -> None:
        """Check each artifact against its sha256 (blocking I/O: call it from a thread)."""
        if self.artifacts is not None:
            for ref in refs:
                self.artifacts.verify(ref)

    def result_outputs(self, node_id: str) -> dict[str, Any]:
        """A node's outputs as results show them: artifacts as their reference."""
        return {
            name: ref.to_json() if (ref := self.artifact_refs.get((node_id, name))) else value
            for name, value in self.outputs[node_id].items()
        }

    def publish(self, node_id: str, values: Mapping[str, Any]) -> None:
        self.outputs[node_id].update(values)

    def stored_form(self, variables: Sequence[Variable]) -> dict[str, Any]:
        """Outputs as persisted inside one value (a forEach item): references, not bytes."""
        return {
            v.name: {ARTIFACT_MARKER: v.artifact.to_json()}
            if v.artifact is not None
            else _escaped(v.value)
            for v in variables
        }

    def from_stored_form(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Undo `stored_form`: load values and localise files kept as artifacts."""
        values: dict[str, Any] = {}
        for name, value in stored.items():
            if _is_marker(value, VALUE_MARKER):
                value = value[VALUE_MARKER]  # task data that looked like a marker
            elif _is_marker(value, ARTIFACT_MARKER):
                ref = ArtifactRef.from_json(value[ARTIFACT_MARKER])
                if self.artifacts is not None:
                    value = (
                        self.artifacts.load_value(ref)
                        if ref.kind == "value"
                        else self.artifacts.local_path(ref)
                    )
            values[name] = value
        return values

    def restore(self, variables: Sequence[Variable]) -> None:
        """Put persisted variables back (resume); artifact values are loaded again."""
        for var in variables:
            value = var.value
            if var.artifact is not None:
                self._remember(var.scope, var.name, var.artifact)
            if var.artifact is not None and self.artifacts is not None:
                if var.artifact.kind == "value":
                    value = self.artifacts.load_value(var.artifact)
                else:
                    value = self.artifacts.local_path(var.artifact)
            if var.scope == INPUT_SCOPE:
                self.inputs[var.name] = value
            elif var.scope == SYSTEM_SCOPE:  # a schedule's `cycle`, `logicalDate`, `schedule`
                self.system[var.name] = value
            elif var.scope in self.outputs:
                self.outputs[var.scope][var.name] = value


def _is_marker(value: Any, marker: str) -> bool:
    return isinstance(value, dict) and len(value) == 1 and marker in value


def _escaped(value: Any) -> Any:
    """Task data shaped like a marker is wrapped, so it never reads back as a reference."""
    if _is_marker(value, ARTIFACT_MARKER) or _is_marker(value, VALUE_MARKER):
        return {VALUE_MARKER: value}
    return value


def _same(value: Any) -> Any:
    return value
