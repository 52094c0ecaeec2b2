"""Trivial tasks for the benchmark: the cost measured is the engine's, not the work's."""

from __future__ import annotations

from typing import Any


def identity(v: Any = None) -> dict[str, Any]:
    return {"v": v}


def big_file(folder: str, mib: int) -> dict[str, Any]:
    """Write `mib` MiB of random bytes to `folder`/big.bin, 1 MiB at a time; its path and sha256."""
    import hashlib
    import os
    import pathlib

    path = pathlib.Path(folder) / "big.bin"
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with path.open("wb") as out:
        for i in range(mib):
            chunk = i.to_bytes(8, "big") + block[8:]
            out.write(chunk)
            digest.update(chunk)
    return {"blob": path, "sha256": digest.hexdigest()}


def read_file(blob: str) -> dict[str, Any]:
    """Read the file `blob` 1 MiB at a time; its sha256 and size."""
    import hashlib

    digest = hashlib.sha256()
    size = 0
    with open(blob, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return {"sha256": digest.hexdigest(), "size": size}
