"""The `echo` task type: greets its `name` input; shows what a plugin receives.

    task: {type: echo, greeting: "hi {{ pipeline.input.who }}", connection: warehouse}

Outputs `echo` (the greeting and the `name` input) and, with `connection`,
`host`: the host of that connection, looked up in the ExecutorEnvironment.
"""

from __future__ import annotations

from whenflow.domain.definitions import TaskSpec
from whenflow.domain.task_io import ExecutorEnvironment, TaskContext, TaskRequest, TaskResult

FIELDS = ("greeting", "connection")


class EchoExecutor:
    task_type = "echo"
    rendered_fields = ("greeting",)

    def __init__(self, environment: ExecutorEnvironment) -> None:
        self._connections = environment.connections

    def check(self, task: TaskSpec) -> list[str]:
        return [
            f"echo task: unknown field {key!r}; known fields: {', '.join(FIELDS)}"
            for key in task.config
            if key not in FIELDS
        ]

    async def execute(self, request: TaskRequest, ctx: TaskContext) -> TaskResult:
        greeting = str(request.task.config.get("greeting", "hello"))
        outputs = {"echo": f"{greeting} {request.inputs.get('name', '')}".strip()}
        name = request.task.config.get("connection")
        if isinstance(name, str):
            outputs["host"] = self._connections.get(name).host or ""
        ctx.log(f"echoing for {request.node_id}")
        return TaskResult(outputs=outputs)


def make_executor(environment: ExecutorEnvironment) -> EchoExecutor:
    """The entry point: `echo = "whenflow_echo:make_executor"`."""
    if environment.settings.get("WHENFLOW_ECHO_FAIL"):
        raise RuntimeError("WHENFLOW_ECHO_FAIL is set, so this plugin refuses to load")
    return EchoExecutor(environment)
