"""Start triggers (`spec.triggers`, DESIGN.md §12): a webhook delivery, another
pipeline's end.

Webhooks (`{webhook: {key}, inputs}`):

`POST /api/v1/hooks/{key}` starts every published pipeline (its latest
published version) with a webhook trigger whose rendered key equals `key`
(compared in constant time). The trigger's `inputs` are templates, rendered in
the Jinja sandbox over `body` (the JSON body, `{}` when empty) and `headers`
(lower-case names); an input whose value is missing there (`{{ body.x }}`
without `x`) is left out, so its default applies. `secret()` is there for the key only. With an
`Idempotency-Key` header, a replayed delivery (same key, same body) returns
the execution the first one started instead of starting another
(`ExecutionHost.start`); the same key with another body is a conflict.

After another pipeline (`{after: {pipeline, status}, inputs}`): when an
execution this server runs ends with one of `status`, every published
pipeline with such a trigger starts, its `inputs` rendered over `upstream`
(`{executionId, pipeline, version, status, outputs, error}`). The start is
idempotent per upstream execution (`after:<execution id>:<trigger index>`), so
an upstream whose end is seen twice starts one execution. A pipeline never
starts itself this way (no endless chain). Executions that end
in another process (`whenflow run`) start nothing, and a server that dies
between an upstream's end and the start loses that start.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import Undefined

from whenflow.domain.errors import InputError, WhenflowError
from whenflow.domain.registry import DefinitionKind, VersionStatus
from whenflow.domain.schedules import AfterTrigger, StartTrigger, WebhookTrigger
from whenflow.dsl.templates import compile_template
from whenflow.engine.runtime import ExecutionResult
from whenflow.services.execution_host import ExecutionHost
from whenflow.services.program_cache import ProgramCache
from whenflow.services.registry import RegistryService
from whenflow.storage.secrets import LayeredSecretStore as SecretStore
from whenflow.storage.secrets import secret_store

_log = logging.getLogger("whenflow.triggers")


class UnknownHook(WhenflowError):
    """No published pipeline has a webhook trigger with that key."""

    def __init__(self) -> None:
        super().__init__(
            "no published pipeline has a webhook trigger with this key; check the URL "
            "and the secret the trigger's key reads"
        )


@dataclass(frozen=True, slots=True)
class HookStart:
    """An execution a webhook delivery started (or, replayed, had started)."""

    pipeline: str
    version: str
    execution_id: str
    status: str
    created: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "version": self.version,
            "executionId": self.execution_id,
            "status": self.status,
            "created": self.created,
            "url": f"/api/v1/executions/{self.execution_id}",
        }


class WebhookStarts:
    """Starts the pipelines a webhook delivery names (module docstring)."""

    def __init__(
        self, host: ExecutionHost, registry: RegistryService, programs: ProgramCache
    ) -> None:
        self._host = host
        self._registry = registry
        self._programs = programs

    async def deliver(
        self,
        key: str,
        body: Any,
        headers: Mapping[str, str],
        idempotency_key: str | None = None,
    ) -> list[HookStart]:
        """Start every pipeline whose webhook trigger has this key; returns the starts.

        Raises:
            UnknownHook: no trigger has this key.
            InputError: the rendered inputs do not fit the pipeline (names the input),
                or a template cannot be rendered.
            IdempotencyConflict: `idempotency_key` was used with another body.
            ServerClosing: the server is shutting down.
        """
        scope = {"body": body, "headers": {k.lower(): v for k, v in headers.items()}}
        secrets = secret_store()
        starts = []
        for entry in await self._registry.list(DefinitionKind.PIPELINE):
            if entry.status is not VersionStatus.PUBLISHED:
                continue
            program = await self._programs.get(entry.name)
            definition = program.definition
            for index, trigger in enumerate(definition.triggers):
                if not isinstance(trigger, WebhookTrigger) or not _matches(trigger, key, secrets):
                    continue
                inputs = _inputs(trigger, scope, f"spec.triggers[{index}]")
                request = {"trigger": index, "body": body}
                started = await self._host.start(
                    program,
                    inputs,
                    idempotency_key=None if idempotency_key is None else f"hook:{idempotency_key}",
                    request=request,
                )
                starts.append(
                    HookStart(
                        definition.name,
                        definition.version,
                        started.execution_id,
                        started.status,
                        started.created,
                    )
                )
        if not starts:
            raise UnknownHook()
        return starts


def _matches(trigger: WebhookTrigger, key: str, store: SecretStore) -> bool:
    def secret(name: str) -> str:
        value = store.get(str(name))
        if value is None:
            raise InputError("key", f"secret({name!r}) is not set: {store.describe(name)}")
        return value

    try:
        expected = compile_template(trigger.key).evaluate({"secret": secret})
    except WhenflowError:
        return False  # a key whose secret is not set matches nothing
    return hmac.compare_digest(str(expected).encode(), key.encode())


def _inputs(trigger: StartTrigger, scope: Mapping[str, Any], where: str) -> dict[str, Any]:
    def render(name: str, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return compile_template(value).evaluate(scope)
            except WhenflowError as exc:
                raise InputError(name, f"{where}.inputs.{name}: {exc}") from None
        if isinstance(value, list):
            return [render(name, v) for v in value]
        if isinstance(value, dict):
            return {k: render(name, v) for k, v in value.items()}
        return value

    rendered = {name: render(name, value) for name, value in trigger.inputs.items()}
    return {name: value for name, value in rendered.items() if not isinstance(value, Undefined)}


class AfterStarts:
    """Starts the pipelines that wait for the end of another's executions (module docstring).

    `on_result` is called by the host with every execution it ran to its end;
    the starts happen in background tasks that `close()` ends.
    """

    def __init__(
        self, host: ExecutionHost, registry: RegistryService, programs: ProgramCache
    ) -> None:
        self._host = host
        self._registry = registry
        self._programs = programs
        self._tasks: set[asyncio.Task[None]] = set()

    def on_result(self, result: ExecutionResult) -> None:
        if not result.status.is_terminal or self._host.closing.is_set():
            return
        task = asyncio.get_running_loop().create_task(
            self._start_after(result), name=f"whenflow-after:{result.execution_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_after(self, result: ExecutionResult) -> None:
        upstream = {
            "executionId": result.execution_id,
            "pipeline": result.pipeline,
            "version": result.version,
            "status": str(result.status),
            "outputs": dict(result.outputs),
            "error": result.error,
        }
        try:
            entries = await self._registry.list(DefinitionKind.PIPELINE)
        except WhenflowError as exc:
            _log.error("after %s: cannot read the registry: %s", result.execution_id, exc)
            return
        for entry in entries:
            if entry.status is not VersionStatus.PUBLISHED or entry.name == result.pipeline:
                continue  # a pipeline never starts itself: no endless chain
            try:
                program = await self._programs.get(entry.name)
                for index, trigger in enumerate(program.definition.triggers):
                    if not isinstance(trigger, AfterTrigger):
                        continue
                    if trigger.pipeline != result.pipeline:
                        continue
                    if upstream["status"] not in trigger.statuses:
                        continue
                    where = f"spec.triggers[{index}]"
                    inputs = _inputs(trigger, {"upstream": upstream}, where)
                    started = await self._host.start(
                        program,
                        inputs,
                        idempotency_key=f"after:{result.execution_id}:{index}",
                        request={"upstream": result.execution_id, "trigger": index},
                    )
                    _log.info(
                        "%s ended %s: started %s (execution %s)",
                        result.execution_id,
                        upstream["status"],
                        entry.name,
                        started.execution_id,
                    )
            except WhenflowError as exc:
                _log.error("after %s: %s did not start: %s", result.execution_id, entry.name, exc)

    async def close(self) -> None:
        """Cancel the starts under way (a closing server starts nothing new)."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
