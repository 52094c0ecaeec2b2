"""Execution inputs from the command line: `-i key=value` and `--inputs-file`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from whenflow.domain.errors import InputError


def parse_inputs(pairs: list[str], inputs_file: Path | None) -> dict[str, Any]:
    """Merge a JSON/YAML inputs file with `-i k=v` pairs (the pairs win).

    Values stay as given here (text from `-i`, JSON/YAML values from the file);
    the pipeline's declared types coerce both the same way later
    (`param_types.coerce_input`).
    """
    values: dict[str, Any] = {}
    if inputs_file is not None:
        try:
            text = inputs_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise InputError(
                str(inputs_file), f"cannot read the inputs file: {exc.strerror}"
            ) from None
        except UnicodeDecodeError as exc:
            raise InputError(
                str(inputs_file),
                f"the inputs file is not UTF-8 text (byte {exc.start}); give a JSON or YAML file",
            ) from None
        try:
            loaded = json.loads(text) if inputs_file.suffix == ".json" else _yaml(text)
        except ValueError as exc:
            raise InputError(str(inputs_file), f"not valid JSON/YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise InputError(str(inputs_file), "must hold a mapping of input names to values")
        values.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(pair, "write inputs as -i name=value")
        values[key.strip()] = value
    return values


def _yaml(text: str) -> Any:
    """YAML with dates and timestamps kept as the text they were written as.

    An input like `start_date: 2024-01-01` is a string to the user; PyYAML's
    default resolver would make it a `datetime.date`.
    """
    import yaml

    class _TextDates(yaml.SafeLoader):
        pass

    _TextDates.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    try:
        return yaml.load(text, Loader=_TextDates)  # a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())) from None  # one line
