"""Throughput probe of the group-commit state store (not a test).

Appends the records 10,000 nodes produce (5 per node: node running, attempt,
completed event, one output variable, node completed), the way the dispatcher
does (a loop turn per node, never awaiting the database), then flushes, and
prints microseconds per node. DESIGN.md §7 budgets 500 µs per node.

    .venv/bin/python benchmarks/store_probe.py [DATABASE_URL] [--nodes N]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from pathlib import Path

from whenflow.domain.events import Event
from whenflow.domain.records import (
    AttemptRecorded,
    EventAppended,
    ExecutionCreated,
    ExecutionUpdated,
    NodeUpdated,
    Record,
    VariableWritten,
)
from whenflow.domain.states import ExecutionStatus, NodeState
from whenflow.domain.variables import Variable
from whenflow.storage.state_store import open_state_store


def node_records(execution_id: str, index: int, now: float) -> list[Record]:
    node_id = f"node_{index}"
    return [
        NodeUpdated(execution_id, node_id, NodeState.RUNNING, 1, now, started_at=now),
        AttemptRecorded(
            execution_id, node_id, -1, 1, NodeState.COMPLETED, f"{execution_id}/{node_id}", now, now
        ),
        EventAppended(
            Event(str(uuid.uuid4()), execution_id, index + 2, f"{node_id}.completed", node_id, now)
        ),
        VariableWritten(execution_id, Variable(node_id, "v", {"n": index}, "object", now)),
        NodeUpdated(
            execution_id, node_id, NodeState.COMPLETED, 1, now, started_at=now, finished_at=now
        ),
    ]


async def probe(url: str, nodes: int) -> float:
    async with open_state_store(url) as store:
        execution_id = str(uuid.uuid4())
        now = time.time()
        store.append([ExecutionCreated(execution_id, "probe", "1.0.0", "{}", None, {}, now)])
        await store.flush()
        start = time.perf_counter()
        for index in range(nodes):
            store.append(node_records(execution_id, index, now))
            if index % 50 == 0:
                await asyncio.sleep(0)  # a dispatcher yields between loop turns
        store.append([ExecutionUpdated(execution_id, ExecutionStatus.COMPLETED, now, now)])
        await store.flush()
        elapsed = time.perf_counter() - start
        print(f"commits: {store.commits}")
    return elapsed / nodes * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--nodes", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.url or f"sqlite+aiosqlite:///{Path(tmp) / 'probe.db'}"
        per_node = asyncio.run(probe(url, args.nodes))
    print(f"{args.nodes} nodes, 5 records each: {per_node:.1f} µs per node ({url.split(':')[0]})")


if __name__ == "__main__":
    main()
