"""Tasks of the fan_out_fan_in example."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def list_files(count: int) -> dict[str, Any]:
    """Create `count` shard files; shard i holds i + 1 lines of three words."""
    folder = Path(tempfile.mkdtemp(prefix="shards-"))
    files = []
    for i in range(count):
        path = folder / f"shard-{i:03d}.txt"
        path.write_text("alpha beta gamma\n" * (i + 1))
        files.append(str(path))
    return {"files": files}


def count_words(path: str, shard: int, ctx: Any) -> dict[str, Any]:
    words = len(Path(path).read_text().split())
    ctx.emit("counted", {"shard": shard, "words": words})
    return {"shard": shard, "words": words}


def total(counts: list[int]) -> dict[str, Any]:
    return {"words": sum(counts)}
