"""What a stored file is: its content type and, for a Parquet file, its schema.

A reference carries the content type (guessed from the file name, or
`application/vnd.apache.parquet` for a file that starts and ends with the
Parquet magic `PAR1`, whatever its name) and, for Parquet, the table schema
read from the file's footer (a few KiB, never the rows):

    {"format": "parquet", "num_rows": 3,
     "fields": [{"name": "id", "type": "int64", "nullable": true}, ...]}

The schema needs `pyarrow` (installed with `whenflow[spark]`, `whenflow[sql]`
or on its own); without it a Parquet reference has no schema.
"""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
_PARQUET_MAGIC = b"PAR1"
_MIN_PARQUET_SIZE = 12  # magic, footer length, magic


def is_parquet(path: str | os.PathLike[str]) -> bool:
    """Whether the local file at `path` is framed as Parquet (`PAR1` at both ends)."""
    try:
        with open(path, "rb") as handle:
            if handle.read(4) != _PARQUET_MAGIC:
                return False
            handle.seek(0, os.SEEK_END)
            if handle.tell() < _MIN_PARQUET_SIZE:
                return False
            handle.seek(-4, os.SEEK_END)
            return handle.read(4) == _PARQUET_MAGIC
    except OSError:
        return False


def content_type_of(path: str | os.PathLike[str]) -> str:
    """The content type of the local file `path`: Parquet by its bytes, else by its name."""
    if is_parquet(path):
        return PARQUET_CONTENT_TYPE
    return mimetypes.guess_type(Path(path).name)[0] or "application/octet-stream"


def parquet_schema(path: str | os.PathLike[str]) -> Mapping[str, Any] | None:
    """The schema in the footer of the Parquet file `path`, as JSON data.

    None when pyarrow is not installed or the footer cannot be read (the
    reference then has no schema; the bytes are stored all the same).
    """
    try:
        import pyarrow.parquet as pq
    except ImportError:
        return None
    try:
        metadata = pq.read_metadata(path)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, ValueError, TypeError):
        return None
    return {
        "format": "parquet",
        "num_rows": int(metadata.num_rows),
        "fields": [
            {"name": field.name, "type": str(field.type), "nullable": bool(field.nullable)}
            for field in schema
        ],
    }
