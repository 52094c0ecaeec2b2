"""Which outside events a pipeline waits for, so `events send` can say when nobody listens."""

from __future__ import annotations

from collections.abc import Iterator
from fnmatch import fnmatchcase

from whenflow.domain.events import EXTERNAL_SOURCE
from whenflow.dsl.compiled_values import iter_strings
from whenflow.dsl.program import RENDERED_CONFIG_FIELDS, PipelineProgram
from whenflow.dsl.templates import analyze_expression, analyze_template
from whenflow.dsl.trigger_ast import ConditionAtom, EventAtom, Expr, atoms


def event_patterns(program: PipelineProgram) -> frozenset[str]:
    """Every event pattern the program's triggers and templates read."""
    return frozenset(_patterns(program))


def _patterns(program: PipelineProgram) -> Iterator[str]:
    exprs: list[Expr] = [program.stop] if program.stop is not None else []
    for node in program.nodes:
        exprs.append(node.start)
        if node.stop is not None:
            exprs.append(node.stop)
        texts = [text for _, text in iter_strings(dict(node.definition.input_bindings))]
        if node.definition.for_each is not None:
            texts.append(node.definition.for_each)
        # The task fields rendered per attempt (a shell command, an approval message).
        config = node.definition.task.config
        for key in RENDERED_CONFIG_FIELDS.get(node.definition.task.type, ()):
            texts.extend(text for _, text in iter_strings(config.get(key)))
        for text in texts:
            yield from analyze_template(text).event_patterns
    for _, text in iter_strings(dict(program.definition.outputs)):
        yield from analyze_template(text).event_patterns
    for expr in exprs:
        for atom in atoms(expr):
            if isinstance(atom, EventAtom):
                yield atom.pattern
            elif isinstance(atom, ConditionAtom):
                yield from analyze_expression(atom.source).event_patterns


def listens_for(program: PipelineProgram, name: str) -> bool:
    """Whether some trigger or template of the program matches `external.<name>`."""
    event_type = f"{EXTERNAL_SOURCE}.{name}"
    return any(fnmatchcase(event_type, p) for p in event_patterns(program))


def external_names(program: PipelineProgram) -> list[str]:
    """The `external.*` patterns the program reads, for a message that lists them."""
    prefix = f"{EXTERNAL_SOURCE}."
    return sorted(p for p in event_patterns(program) if p.startswith(prefix))
