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

Large results are written as Parquet (pyarrow, the `sql` extra) as they
are fetched, keeping the database's types (dates stay dates, decimals
decimals); the column types go to the `schema` output.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
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


class ParquetSink:
    """Rows written to a Parquet file as they are fetched, a chunk at a time.

    Each column's Arrow type is inferred from its first non-null values
    (decimals widened to 38 digits of precision, their scale kept); the
    file is opened once every column has a type, or at the end (an all-null
    column is then text). A column whose values have no common type (an
    `int` beside a `str`, as SQLite allows) is stored as text. A later value
    that does not fit its column's type raises InvalidTaskConfig naming the
    column: cast it in the query.
    """

    def __init__(self, path: Path, columns: Sequence[str], chunk_rows: int = 10_000) -> None:
        self._pa, self._pq = parquet_modules()
        self._path = path
        self._names = unique_names(columns)
        self._chunk = chunk_rows
        self._pending: list[Sequence[Any]] = []
        self._types: list[Any] = [None] * len(columns)
        self._as_text = [False] * len(columns)
        self._writer: Any = None
        self.rows = 0

    def add(self, row: Sequence[Any]) -> None:
        self._pending.append(row)
        self.rows += 1
        if len(self._pending) >= self._chunk:
            self._flush(final=False)

    def close(self) -> list[dict[str, str]]:
        """Write what is left and close the file; return the schema as `[{name, type}]`."""
        self._flush(final=True)
        if self._writer is not None:
            self._writer.close()
        return [{"name": f.name, "type": str(f.type)} for f in self._schema()]

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _schema(self) -> Any:
        pa = self._pa
        return pa.schema([pa.field(n, t) for n, t in zip(self._names, self._types, strict=True)])

    def _flush(self, *, final: bool) -> None:
        pa = self._pa
        if self._writer is None:
            self._infer()
            if any(t is None for t in self._types):
                if not final:
                    return  # a column has seen only nulls so far: keep its rows a while
                self._types = [pa.string() if t is None else t for t in self._types]
            self._writer = self._pq.ParquetWriter(str(self._path), self._schema())
        if not self._pending:
            return
        arrays = [self._array(index) for index in range(len(self._names))]
        self._writer.write_table(pa.Table.from_arrays(arrays, schema=self._schema()))
        self._pending = []

    def _infer(self) -> None:
        pa = self._pa
        for index, known in enumerate(self._types):
            if known is not None:
                continue
            values = [row[index] for row in self._pending if row[index] is not None]
            if not values:
                continue
            try:
                inferred = pa.array(values).type
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
                self._types[index], self._as_text[index] = pa.string(), True
                continue
            if pa.types.is_decimal(inferred):
                inferred = pa.decimal128(38, min(inferred.scale, 18))
            self._types[index] = inferred

    def _array(self, index: int) -> Any:
        pa = self._pa
        values = [row[index] for row in self._pending]
        kind = self._types[index]
        if self._as_text[index]:
            return pa.array([None if v is None else str(v) for v in values], pa.string())
        try:
            return pa.array(values, type=kind)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError):
            raise InvalidTaskConfig(
                "sql",
                f"column {self._names[index]!r} changes type after its first rows (it began "
                f"as {kind}); CAST it to one type in the query",
            ) from None


def write_parquet(path: Path, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[Any]:
    """Write `rows` as a Parquet file (ParquetSink); return its schema as `[{name, type}]`."""
    sink = ParquetSink(path, columns)
    for row in rows:
        sink.add(row)
    return sink.close()


def unique_names(columns: Iterable[str]) -> list[str]:
    """Column names made unique (`SELECT a, a` has two columns named `a`): `a`, `a_2`."""
    return list(_unique(columns))


def _unique(columns: Iterable[str]) -> Iterator[str]:
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
