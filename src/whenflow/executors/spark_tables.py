"""Tables in and out of a `spark` task: Parquet inputs as views, DataFrames as one Parquet file.

In: an input whose value is the local path of a Parquet file (an artifact
reference a node received: `PAR1` magic) or of a folder of Parquet files
(what Spark writes) is a table; `sql:` sees it as a temporary view named like
the input. Other inputs are scalars, bound as `:name` parameters.

Out: a DataFrame is written by Spark into a scratch folder (one part file per
partition, in parallel), then the parts are joined into one Parquet file, row
group by row group (never the whole table in memory), which the engine stores
as an artifact whose reference carries the schema.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whenflow.executors.errors import InvalidTaskConfig, TaskOutputError

_PARQUET_MAGIC = b"PAR1"
SCALARS = (str, int, float, bool)


def is_table(value: object) -> bool:
    """Whether `value` is the local path of a Parquet file or of a folder of Parquet files."""
    if not isinstance(value, str | os.PathLike) or not str(value):
        return False
    path = Path(value)
    try:
        if path.is_file():
            with path.open("rb") as handle:
                return handle.read(4) == _PARQUET_MAGIC
        if path.is_dir():
            return any(child.suffix == ".parquet" for child in path.iterdir())
    except OSError:
        return False
    return False


def split_inputs(inputs: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, Any]]:
    """(tables by view name, scalar parameters) for `sql:`; raises InvalidTaskConfig.

    A view name must be a SQL identifier; a parameter must be a string,
    number, boolean or null.
    """
    tables: dict[str, str] = {}
    parameters: dict[str, Any] = {}
    for name, value in inputs.items():
        if is_table(value):
            if not name.isidentifier():
                raise InvalidTaskConfig(
                    "spark", f"input {name!r} is a table but not a valid view name; rename it"
                )
            tables[name] = os.fspath(value)
        elif value is None or isinstance(value, SCALARS):
            parameters[name] = value
        else:
            raise InvalidTaskConfig(
                "spark",
                f"input {name!r} is a {type(value).__name__}: Spark SQL reads Parquet artifacts "
                "(as views named like the input) and strings, numbers and booleans (as "
                f":{name} parameters); pass it to a `callable` instead",
            )
    return tables, parameters


def write_parquet(frame: Any, folder: Path, name: str) -> Path:
    """Write the DataFrame `frame` as the single Parquet file `folder/name.parquet`.

    Raises TaskOutputError when Spark wrote no part file.
    """
    import pyarrow.parquet as pq

    parts_dir = folder / f".{name}.parts"
    frame.write.mode("overwrite").parquet(parts_dir.as_uri())
    parts = sorted(p for p in parts_dir.iterdir() if p.name.endswith(".parquet"))
    target = folder / f"{name}.parquet"
    if not parts:
        raise TaskOutputError(f"Spark wrote no Parquet file for output {name!r}")
    if len(parts) == 1:
        os.replace(parts[0], target)
    else:
        schema = pq.read_schema(parts[0])
        with pq.ParquetWriter(target, schema) as writer:
            for part in parts:
                source = pq.ParquetFile(part)
                try:
                    for group in range(source.num_row_groups):
                        writer.write_table(source.read_row_group(group))
                finally:
                    source.close()
    shutil.rmtree(parts_dir, ignore_errors=True)
    return target


def spark_schema(frame: Any) -> dict[str, Any]:
    """The DataFrame's schema as Spark writes it in JSON (`{"type": "struct", "fields": [...]}`)."""
    schema: dict[str, Any] = frame.schema.jsonValue()
    return schema
