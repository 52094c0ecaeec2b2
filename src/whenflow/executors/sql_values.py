"""What a `sql` task's rows become: JSON values, or a Parquet file (DESIGN.md §6, §13).

Small results are outputs (`rows`: a list of objects keyed by column), so
every value is made JSON-safe by `json_safe`:

| database value             | output                                            |
| -------------------------- | ------------------------------------------------- |
| datetime, date, time       | ISO 8601 text (`2024-01-31T09:30:00+00:00`)       |
| Decimal                    | an int when whole, a float when the float is the  |
|                            | same number (`12.5`), else the exact text         |
| bytes, memoryview          | base64 text                                       |
| UUID                       | its text                                          |
| timedelta                  | seconds, a float                                  |
| NaN, ±infinity             | null                                              |
| arrays, JSON documents     | lists and objects, converted the same way         |
| anything else              | its `str()`                                       |

Large results are written as Parquet (pyarrow, the `sql` extra), keeping
the database's types (dates stay dates, decimals decimals); the column
types go to the `schema` output.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from whenflow.executors.errors import InvalidTaskConfig

PARQUET_HELP = "install the sql extra: pip install 'whenflow[sql]'"


_JSON_TYPES = frozenset({str, int, bool, type(None)})


def json_safe(value: Any) -> Any:
    """`value` as JSON data, by the table of the module docstring."""
    if type(value) in _JSON_TYPES:  # most values: checked first, without building unions
        return value
    if isinstance(value, bool | int | str):  # their subclasses (an IntEnum...)
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return _decimal(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return str(value)


def _decimal(value: Decimal) -> int | float | str | None:
    if not value.is_finite():
        return None
    if value == value.to_integral_value():
        return int(value)
    as_float = float(value)
    return as_float if Decimal(repr(as_float)) == value else str(value)


def parquet_modules() -> tuple[Any, Any]:
    """`(pyarrow, pyarrow.parquet)`; raises InvalidTaskConfig naming the extra to install."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InvalidTaskConfig(
            "sql", f"a Parquet result needs pyarrow, which is not installed; {PARQUET_HELP}"
        ) from None
    return pyarrow, pyarrow.parquet


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Write `rows` as a Parquet file; return its schema as `[{name, type}]`.

    Each column's Arrow type is inferred from its values; a column whose
    values have no common type (an `int` beside a `str`) is stored as text.
    """
    pa, pq = parquet_modules()
    arrays = []
    for index in range(len(columns)):
        values = [row[index] for row in rows]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            arrays.append(pa.array([None if v is None else str(v) for v in values], pa.string()))
    table = pa.Table.from_arrays(arrays, names=list(_unique(columns)))
    pq.write_table(table, str(path))
    return [{"name": field.name, "type": str(field.type)} for field in table.schema]


def _unique(columns: Sequence[str]) -> Iterator[str]:
    """Column names made unique (`SELECT a, a` has two columns named `a`): `a`, `a_2`."""
    seen: set[str] = set()
    for name in columns:
        candidate, n = name, 1
        while candidate in seen:
            n += 1
            candidate = f"{name}_{n}"
        seen.add(candidate)
        yield candidate


def parquet_batches(path: str, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of a Parquet file as lists of objects, `batch_rows` at a time."""
    _pa, pq = parquet_modules()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield batch.to_pylist()
