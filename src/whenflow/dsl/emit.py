"""A PipelineDefinition written back as a `kind: Pipeline` YAML document.

An execution stores the text of its pipeline, so that `whenflow resume` can
compile it again in a new process. A definition built in Python has no text;
this module writes one. The document is self-contained: a task that came
from a `kind: Task` reference is written inline with its signature, and
`spec.defaults` are already applied to every node. Reading the text back
gives an equal definition (a test checks this for every example).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from whenflow.domain.definitions import (
    DEFAULT_FINALLY_GRACE_S,
    NodeDefinition,
    ParamSpec,
    PipelineDefinition,
    RetryPolicy,
    TaskSpec,
)
from whenflow.domain.schedules import StartTrigger, WebhookTrigger

_DEFAULT_RETRY = RetryPolicy()


def to_yaml(definition: PipelineDefinition) -> str:
    """The YAML text of `definition`, as `whenflow.dsl.parse` reads it."""
    return yaml.safe_dump(to_document(definition), sort_keys=False, allow_unicode=True, width=100)


def to_document(definition: PipelineDefinition) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": definition.name, "version": definition.version}
    if definition.description:
        metadata["description"] = definition.description
    spec: dict[str, Any] = {}
    if definition.inputs:
        spec["inputs"] = _params(definition.inputs)
    if definition.concurrency is not None:
        spec["concurrency"] = definition.concurrency
    if definition.fail_fast:
        spec["failFast"] = True
    if definition.stop_when is not None:
        spec["stopWhen"] = definition.stop_when
    if definition.timeout_s is not None:
        spec["timeout"] = definition.timeout_s
    if definition.finally_grace_s != DEFAULT_FINALLY_GRACE_S:
        spec["finallyGrace"] = definition.finally_grace_s
    spec["nodes"] = [_node(n) for n in definition.nodes]
    if definition.outputs:
        spec["outputs"] = _plain(definition.outputs)
    if definition.schedules:
        spec["schedules"] = [s.to_json() for s in definition.schedules]
    if definition.notify:
        spec["notify"] = [
            {"on": [o.value for o in rule.on], rule.channel.value: _plain(rule.settings)}
            for rule in definition.notify
        ]
    if definition.triggers:
        spec["triggers"] = [_trigger(t) for t in definition.triggers]
    return {"apiVersion": "whenflow/v1", "kind": "Pipeline", "metadata": metadata, "spec": spec}


def _trigger(trigger: StartTrigger) -> dict[str, Any]:
    if isinstance(trigger, WebhookTrigger):
        return {"webhook": {"key": trigger.key}, "inputs": _plain(trigger.inputs)}
    after = {"pipeline": trigger.pipeline, "status": list(trigger.statuses)}
    return {"after": after, "inputs": _plain(trigger.inputs)}


def _node(node: NodeDefinition) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node.id}
    if node.description:
        out["description"] = node.description
    out["task"] = _task(node.task)
    optional: list[tuple[str, Any, Any]] = [
        ("startWhen", node.start_when, None),
        ("stopWhen", node.stop_when, None),
        ("inputBindings", _plain(node.input_bindings), {}),
        ("forEach", node.for_each, None),
        ("each", node.each, None),
        ("maxParallel", node.max_parallel, None),
        ("onItemError", node.on_item_error.value, "fail"),
        ("allowFailure", node.allow_failure, False),
        ("retry", _retry(node.retry), None),
        ("timeout", node.timeout_s, None),
        ("within", node.within_s, None),
        ("emits", list(node.emits), []),
        ("deadline", node.deadline_s, None),
        ("finally", node.is_finally, False),
    ]
    for key, value, default in optional:
        if value != default:
            out[key] = value
    return out


def _task(task: TaskSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"type": task.type, **_plain(task.config)}
    if task.signature is not None:
        out["inputs"] = _params(task.signature.inputs)
        out["outputs"] = _params(task.signature.outputs)
        if task.signature.emits:
            out["emits"] = list(task.signature.emits)
    return out


def _retry(policy: RetryPolicy) -> dict[str, Any] | None:
    if policy == _DEFAULT_RETRY:
        return None
    out: dict[str, Any] = {
        "maxAttempts": policy.max_attempts,
        "delay": policy.delay_s,
        "backoff": policy.backoff.value,
    }
    if policy.max_delay_s is not None:
        out["maxDelay"] = policy.max_delay_s
    if policy.retry_on:
        out["retryOn"] = list(policy.retry_on)
    return out


def _params(params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, spec in params.items():
        entry: dict[str, Any] = {"type": spec.type}
        if spec.required:
            entry["required"] = True
        if spec.default is not None:
            entry["default"] = _plain(spec.default)
        if spec.description:
            entry["description"] = spec.description
        out[name] = entry
    return out


def _plain(value: Any) -> Any:
    """Mappings and sequences as the dicts and lists a YAML dumper writes."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
