"""JSON Schemas of the definition documents, for editors (`whenflow schema`).

Generated from the same pydantic models that validate the YAML, with the YAML
(camelCase) keys, so the schema cannot drift from the loader. It checks shape
only; the meaning of triggers and templates is checked by `whenflow validate`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from whenflow.dsl.schema import PipelineDocument, TaskDocument

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _keys_as_titles(schema: dict[str, Any]) -> dict[str, Any]:
    """Title each property with its YAML key (pydantic would write "Startwhen")."""
    models = [schema, *schema.get("$defs", {}).values()]
    for model in models:
        for key, prop in model.get("properties", {}).items():
            prop["title"] = key
    return schema


def _schema_of(model: type[BaseModel], title: str) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return _keys_as_titles({"$schema": JSON_SCHEMA_DIALECT, **schema, "title": title})


def pipeline_json_schema() -> dict[str, Any]:
    """The schema of a `kind: Pipeline` document."""
    return _schema_of(PipelineDocument, "whenflow Pipeline")


def task_json_schema() -> dict[str, Any]:
    """The schema of a `kind: Task` document."""
    return _schema_of(TaskDocument, "whenflow Task")


def definition_json_schema() -> dict[str, Any]:
    """One schema for any definition document: a Pipeline or a Task (`oneOf`, by `kind`)."""
    refs, schema = models_json_schema(
        [(PipelineDocument, "validation"), (TaskDocument, "validation")],
        by_alias=True,
        ref_template="#/$defs/{model}",
    )
    return _keys_as_titles(
        {
            "$schema": JSON_SCHEMA_DIALECT,
            "title": "whenflow definition",
            "oneOf": [
                refs[(PipelineDocument, "validation")],
                refs[(TaskDocument, "validation")],
            ],
            "$defs": schema.get("$defs", {}),
        }
    )
