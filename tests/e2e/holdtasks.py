"""A python task for the signal e2e tests (run with `isolation: process`).

`hold(folder)` appends its pid to `folder/pids` and then sleeps, unless the
file `folder/release` exists, in which case it returns at once.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any


def hold(folder: str) -> dict[str, Any]:
    work = Path(folder)
    if (work / "release").exists():
        return {"released": True}
    with (work / "pids").open("a") as pids:
        pids.write(f"{os.getpid()}\n")
    time.sleep(300)
    return {"released": False}
