"""Which secrets a pipeline reads by a constant name: `{{ secret('API_TOKEN') }}`.

The execution's mask is seeded with their values before the first node
runs, so a secret first read by a later node is masked in what earlier
nodes wrote too (DESIGN.md §6, §10). A name computed at run time
(`secret(pipeline.input.which)`) is masked from the moment it is read.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jinja2 import nodes

from whenflow.dsl.compiled_values import iter_strings
from whenflow.dsl.program import PipelineProgram
from whenflow.dsl.templates import ENV


def constant_secret_names(text: str) -> set[str]:
    """The names of the `secret('NAME')` calls with a literal name in one template text."""
    if "secret" not in text:
        return set()
    try:
        tree = ENV.parse(text)
    except Exception:  # validation reports unparsable templates; nothing to seed here
        return set()
    names = set()
    for call in tree.find_all(nodes.Call):
        argument = call.args[0] if len(call.args) == 1 and not call.kwargs else None
        if (
            isinstance(call.node, nodes.Name)
            and call.node.name == "secret"
            and isinstance(argument, nodes.Const)
            and isinstance(argument.value, str)
        ):
            names.add(argument.value)
    return names


def program_secret_names(program: PipelineProgram) -> list[str]:
    """Every constant secret name in the program's templates and its sub-pipelines', sorted."""
    return sorted({name for text in _texts(program) for name in constant_secret_names(text)})


def _texts(program: PipelineProgram) -> Iterator[str]:
    definition = program.definition
    values: list[Any] = [dict(definition.outputs), definition.stop_when]
    for node in definition.nodes:
        values += [
            dict(node.input_bindings),
            dict(node.task.config),
            node.for_each,
            node.start_when,
            node.stop_when,
        ]
    for value in values:
        for _path, text in iter_strings(value):
            yield text
    for node_program in program.nodes:
        if node_program.child is not None:
            yield from _texts(node_program.child)
