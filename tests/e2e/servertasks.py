"""Python tasks of the server e2e tests, imported through `whenflow server --code-path`.

`gate(folder, node, tag, wait)` appends `tag node` to `folder/calls`, then returns at
once if `folder/open` exists (or `wait` is false); otherwise it writes `folder/ready-<tag>-<node>`
and waits for `open` to appear (a test opens it). The test synchronises on
those files, never on time.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

GATE_LIMIT_S = 120.0


def gate(folder: str, node: str, tag: str = "", wait: bool = True) -> dict[str, Any]:
    work = Path(folder)
    with (work / "calls").open("a") as calls:
        calls.write(f"{tag} {node}\n")
    if wait and not (work / "open").exists():
        (work / f"ready-{tag}-{node}").write_text("")
        deadline = time.monotonic() + GATE_LIMIT_S
        while not (work / "open").exists():
            if time.monotonic() > deadline:
                raise TimeoutError("the test never opened the gate")
            time.sleep(0.02)
    return {"node": node}


def fail_once(folder: str, node: str, tag: str = "") -> dict[str, Any]:
    """Record the call; the first call (per folder and tag) raises, later ones pass."""
    work = Path(folder)
    with (work / "calls").open("a") as calls:
        calls.write(f"{tag} {node}\n")
    marker = work / f"failed-{tag}-{node}"
    if not marker.exists():
        marker.write_text("")
        raise RuntimeError(f"{node} fails the first time")
    return {"node": node, "value": 3}
