"""Throughput and latency of `whenflow server` through its REST API (issue #14).

    make bench-api     # or: .venv/bin/python benchmarks/api.py [--quick]
                       #     [--store sqlite|postgresql] [--clients 10] [--count 1000]
                       #     [--rates 10,50,100] [--seconds 10] [--waiting 1000]
                       #     [--idempotency-keys] [--stats-calls 50]

A real `whenflow server` runs as a subprocess on a free loopback port, with its
own WHENFLOW_HOME in a temporary folder (and, with `--store postgresql`, a
scratch database created on 127.0.0.1:5432 and dropped at the end). This
process is the client (httpx, one event loop). Completions are read from the
server's status stream (`GET /api/v1/events/stream`), never by polling.

1. throughput: `--clients` concurrent clients start `--count` executions of a
   3-node noop chain as fast as the API answers: starts/s (first to last 201),
   and executions/min completed (first start to last `completed`);
2. latency, open loop: starts scheduled at each of `--rates` per second for
   `--seconds`, queued at their time whatever the server's progress and sent by
   `--senders` connections (a bounded pool: httpx's own pool costs the client
   CPU per waiting request, and with a thousand requests in flight this client,
   not the server, became the bottleneck); every figure counts from the
   scheduled time, so a start that waited for a free connection is late by
   that much (no coordinated omission); p50/p99 of
   scheduled start to the `completed` status, of the start request itself (its
   201 comes after the store's flush barrier), and of the later of the two (the
   status stream reports `completed` when the dispatcher appends the event, which
   can be before the group commit that makes the start durable answers);
3. waiting: `--waiting` executions parked on an `approval` node at once: the
   server's RSS (`/stats` and /proc), p50/p99 of `GET /stats` over 50 calls,
   then the time to approve them all through the API (10 clients) and to see
   them complete.

Each start is the seed request, `{"version": "1.0.0"}` (a version named: the
server does not look up the latest), without an Idempotency-Key unless
`--idempotency-keys` (then a connection error is retried with the same key). A
failed start is counted and printed, not retried. Each phase prints the CPU
seconds the server and this client spent, per execution.

Client and server share the machine's cores, so the figures include the
client's cost. Figures are printed, never asserted: speed is measured, not tested.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from api_server import (
    TERMINAL,
    Starter,
    StatusBoard,
    cpu_used,
    in_parallel,
    log_tail_on_error,
    rss_from_proc,
    running_server,
    scratch_postgres,
)

NOOP_PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: bench_noop, version: 1.0.0}
spec:
  nodes:
    - {id: a, task: {type: noop}, inputBindings: {v: 1}}
    - {id: b, startWhen: event:a.completed, task: {type: noop}, inputBindings: {v: "{{ a.v }}"}}
    - {id: c, startWhen: event:b.completed, task: {type: noop}, inputBindings: {v: "{{ b.v }}"}}
"""

WAIT_PIPELINE = """\
apiVersion: whenflow/v1
kind: Pipeline
metadata: {name: bench_wait, version: 1.0.0}
spec:
  nodes:
    - id: review
      task: {type: approval, message: "go?"}
"""


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of `values`.

    Raises ValueError for no values or a `q` outside (0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def _rates(text: str) -> list[float]:
    try:
        rates = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a list of numbers, e.g. 10,50,100"
        ) from None
    if not rates or any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"{text!r}: give positive starts per second")
    return rates


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


@dataclass(frozen=True)
class Options:
    store: str
    clients: int
    count: int
    rates: list[float]
    seconds: float
    waiting: int
    stats_calls: int
    keys: bool
    senders: int


def parse_args(argv: Sequence[str] | None = None) -> Options:
    """The options; `--quick` lowers the defaults of count, seconds and waiting
    (explicit values win). Exits 2 on bad input (argparse)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--store", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--quick", action="store_true", help="a short run (about a minute)")
    parser.add_argument("--clients", type=_positive, default=10)
    parser.add_argument("--count", type=_positive, help="executions for throughput (1000)")
    parser.add_argument("--rates", type=_rates, default=[10.0, 50.0, 100.0])
    parser.add_argument("--seconds", type=float, help="seconds of each open-loop rate (10)")
    parser.add_argument("--waiting", type=_positive, help="parked executions (1000)")
    parser.add_argument("--stats-calls", type=_positive, default=50)
    parser.add_argument(
        "--senders", type=_positive, default=64, help="connections of the open-loop phase (64)"
    )
    parser.add_argument(
        "--idempotency-keys",
        action="store_true",
        help="send an Idempotency-Key with every start (and retry connection errors)",
    )
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    seconds = args.seconds if args.seconds is not None else (3.0 if quick else 10.0)
    if seconds <= 0:
        parser.error("--seconds must be positive")
    return Options(
        store=args.store,
        clients=args.clients,
        count=args.count or (200 if quick else 1000),
        rates=args.rates,
        seconds=seconds,
        waiting=args.waiting or (200 if quick else 1000),
        stats_calls=args.stats_calls,
        keys=bool(args.idempotency_keys),
        senders=args.senders,
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f} ms"


# ------------------------------------------------------------------- the phases


@dataclass
class Bench:
    """What every phase uses: the client, the status board, the starter, the server."""

    opts: Options
    client: httpx.AsyncClient
    board: StatusBoard
    start: Starter
    pid: int


async def throughput(b: Bench) -> None:
    opts = b.opts
    ids: list[str] = []
    print(f"\n1. throughput: {opts.count} starts of a 3-node noop chain, {opts.clients} clients")
    with cpu_used(b.pid, lambda: len(ids)):
        began = time.monotonic()

        async def one(_: int) -> None:
            if (execution_id := await b.start("bench_noop")) is not None:
                ids.append(execution_id)

        await in_parallel(opts.clients, opts.count, one)
        started = time.monotonic() - began
        left = await b.board.wait_all(ids, TERMINAL)
        ends = [t for i in ids if (t := b.board.reached(i, TERMINAL)) is not None]
        last = max(ends) - began
        completed = sum(1 for i in ids if "completed" in b.board.seen.get(i, {}))
        print(
            f"   started        {len(ids) / started:8.1f} executions/s  ({started:.2f} s; "
            f"{opts.count - len(ids)} starts failed)"
        )
        print(
            f"   completed      {completed / last * 60:8.0f} executions/min "
            f"(first start to last end {last:.2f} s; {completed} completed, {left} unfinished)"
        )


async def latency(b: Bench, rate: float) -> None:
    count = max(1, round(rate * b.opts.seconds))
    scheduled: dict[str, float] = {}
    answered: dict[str, float] = {}
    late: list[float] = []
    failed = len(b.start.failures)
    with cpu_used(b.pid, lambda: len(scheduled)):
        began = time.monotonic() + 0.1
        due_times: asyncio.Queue[float | None] = asyncio.Queue()

        async def schedule() -> None:
            for index in range(count):
                due = began + index / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))  # an open loop's schedule
                due_times.put_nowait(due)
            for _ in range(b.opts.senders):
                due_times.put_nowait(None)

        async def send() -> None:
            while (due := await due_times.get()) is not None:
                late.append(time.monotonic() - due)
                execution_id = await b.start("bench_noop")
                if execution_id is not None:
                    answered[execution_id] = time.monotonic()
                    scheduled[execution_id] = due

        await asyncio.gather(schedule(), *(send() for _ in range(b.opts.senders)))
        sent_for = time.monotonic() - began
        left = await b.board.wait_all(list(scheduled), TERMINAL)
        print(
            f"   {rate:6.0f}/s offered: {count} starts, all answered in {sent_for:.2f} s "
            f"({count / sent_for:.1f}/s; {len(b.start.failures) - failed} failed; "
            f"sent late p50 {_ms(percentile(late, 50)).strip()}, "
            f"p99 {_ms(percentile(late, 99)).strip()})"
        )
        ends = {
            i: end
            for i in scheduled
            if (end := b.board.reached(i, frozenset({"completed"}))) is not None
        }
        lines = (
            ("start -> completed", [end - scheduled[i] for i, end in ends.items()]),
            ("start request 201", [t - scheduled[i] for i, t in answered.items()]),
            (
                "201 and completed",
                [max(end, answered[i]) - scheduled[i] for i, end in ends.items()],
            ),
        )
        for label, values in lines:
            if values:
                print(
                    f"      {label:19} p50 {_ms(percentile(values, 50))}  "
                    f"p99 {_ms(percentile(values, 99))}  max {_ms(max(values))}"
                )
        print(f"      ({len(ends)} completed, {left} unfinished)")


async def stats_latency(b: Bench) -> tuple[list[float], dict[str, Any]]:
    """Seconds of each of `stats_calls` sequential `GET /stats`, and the last answer."""
    times = []
    body: dict[str, Any] = {}
    for _ in range(b.opts.stats_calls):
        t0 = time.monotonic()
        response = await b.client.get("/stats")
        times.append(time.monotonic() - t0)
        response.raise_for_status()
        body = response.json()
    return times, body


async def waiting(b: Bench) -> None:
    opts = b.opts
    idle_times, idle = await stats_latency(b)
    ids: list[str] = []
    print(f"\n3. {opts.waiting} executions waiting on an approval node")
    with cpu_used(b.pid, lambda: len(ids)):
        began = time.monotonic()

        async def park(_: int) -> None:
            if (execution_id := await b.start("bench_wait")) is not None:
                ids.append(execution_id)

        await in_parallel(opts.clients, opts.waiting, park)
        left = await b.board.wait_all(ids, frozenset({"waiting"}))
        print(
            f"   started and parked in {time.monotonic() - began:.2f} s "
            f"({opts.waiting - len(ids)} starts failed, {left} not waiting)"
        )
    busy_times, busy = await stats_latency(b)
    rss, rss_before = busy["process"]["rssBytes"], idle["process"]["rssBytes"]
    print(
        f"   RSS before {rss_before / 2**20:.1f} MiB; with them waiting {rss / 2**20:.1f} MiB "
        f"(/stats), {rss_from_proc(b.pid) / 2**20:.1f} MiB (/proc), "
        f"peak {busy['process']['maxRssBytes'] / 2**20:.1f} MiB; "
        f"{(rss - rss_before) / max(len(ids), 1) / 1024:.1f} KiB an execution; "
        f"/stats says {busy['executions']['running']} running"
    )
    for label, times in (("before", idle_times), ("waiting", busy_times)):
        print(
            f"   GET /stats {label:8} p50 {_ms(percentile(times, 50))}  "
            f"p99 {_ms(percentile(times, 99))}  ({len(times)} calls)"
        )
    print(f"   loop lag with them waiting: max {busy['loop']['maxLagSeconds'] * 1000:.1f} ms")
    refused: list[str] = []
    with cpu_used(b.pid, lambda: len(ids)):
        began = time.monotonic()

        async def approve(index: int) -> None:
            response = await b.client.post(
                f"/api/v1/executions/{ids[index]}/nodes/review/approve", json={"by": "bench"}
            )
            if response.status_code != 200:
                refused.append(f"{response.status_code} {response.text[:200]}")

        await in_parallel(opts.clients, len(ids), approve)
        answered = time.monotonic() - began
        left = await b.board.wait_all(ids, TERMINAL)
        done = time.monotonic() - began
        print(
            f"   approve all ({opts.clients} clients): answered in {answered:.2f} s "
            f"({len(ids) / answered:.0f}/s), all ended in {done:.2f} s "
            f"({len(refused)} refused, {left} unfinished)"
        )
    if refused:
        print(f"   first refusal: {refused[0]}")


async def _push(client: httpx.AsyncClient, text: str) -> None:
    response = await client.post(
        "/api/v1/pipelines",
        params={"publish": "true"},
        content=text.encode(),
        headers={"Content-Type": "application/yaml"},
    )
    if response.status_code != 201:
        raise SystemExit(f"push: {response.status_code} {response.text}")


async def bench(opts: Options, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="whenflow-bench-api-") as tmp:
        home = Path(tmp)
        with running_server(home, database_url) as server, log_tail_on_error(server):
            limits = httpx.Limits(max_connections=500, max_keepalive_connections=500)
            async with httpx.AsyncClient(
                base_url=server.url, timeout=120.0, limits=limits
            ) as client:
                for text in (NOOP_PIPELINE, WAIT_PIPELINE):
                    await _push(client, text)
                board = StatusBoard()
                connected = asyncio.Event()
                follower = asyncio.create_task(board.follow(client, connected))
                await asyncio.wait_for(connected.wait(), 30)
                b = Bench(opts, client, board, Starter(client, opts.keys), server.process.pid)
                try:
                    await b.start("bench_noop")  # warm-up: imports, caches, connections
                    await throughput(b)
                    print(f"\n2. latency, open loop, {opts.seconds:g} s per rate")
                    for rate in opts.rates:
                        await latency(b, rate)
                    await waiting(b)
                    print(
                        f"\nstarts failed: {len(b.start.failures)}; "
                        f"sent again with their Idempotency-Key: {b.start.retries}"
                    )
                    for failure in b.start.failures[:3]:
                        print(f"   {failure}")
                finally:
                    follower.cancel()
                    with contextlib.suppress(asyncio.CancelledError, httpx.HTTPError):
                        await follower


async def main_async(opts: Options) -> None:
    print(f"whenflow server through its API; store {opts.store}; {os.cpu_count()} cores")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if opts.store == "postgresql":
        async with scratch_postgres() as url:
            await bench(opts, url)
    else:
        await bench(opts, None)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def main(argv: Sequence[str] | None = None) -> None:
    asyncio.run(main_async(parse_args(argv)))


if __name__ == "__main__":
    main()
