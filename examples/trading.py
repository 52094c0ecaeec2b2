"""Tasks of the trading_signals example (seed 001): a price feed, one trade per signal.

Deterministic: prices come from a seeded random walk and a trade's outcome from
the seed and the signal's index; no network, a couple of milliseconds per tick.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any


async def price_feed(seed: int, ticks: int, ctx: Any) -> dict[str, Any]:
    """Emit `tick` for every price and `buy_signal` when the price dips below its
    5-tick average; runs until `ticks` prices or until a stopWhen stops it."""
    rng = random.Random(seed)
    price = 100.0
    window: list[float] = []
    signals = 0
    for i in range(ticks):
        price = round(price + rng.uniform(-1.0, 1.0), 2)
        window = [*window[-4:], price]
        ctx.emit("tick", {"i": i, "price": price})
        if len(window) == 5 and price < sum(window) / 5 - 0.3:
            signals += 1
            ctx.emit("buy_signal", {"i": i, "price": price})
        await asyncio.sleep(0.002)
    return {"ticks": ticks, "signals": signals}


async def trade(signal: int, price: float, seed: int, ctx: Any) -> dict[str, Any]:
    """One trade on one buy signal: emits `win` or `loss` with its profit."""
    outcome_rng = random.Random(seed * 1_000 + signal)
    await asyncio.sleep(0.003)
    pnl = round(outcome_rng.uniform(-2.0, 1.5), 2)
    outcome = "win" if pnl >= 0 else "loss"
    ctx.emit(outcome, {"signal": signal, "pnl": pnl})
    return {"signal": signal, "price": price, "outcome": outcome, "pnl": pnl}


def halt(losses: list[dict[str, Any]]) -> dict[str, Any]:
    """The risk check: what the feed is stopped for."""
    return {"losses": len(losses), "lost": round(sum(e["payload"]["pnl"] for e in losses), 2)}


def report(trades: list[dict[str, Any]], halted: bool) -> dict[str, Any]:
    wins = sum(1 for t in trades if t["outcome"] == "win")
    return {
        "trades": len(trades),
        "wins": wins,
        "losses": len(trades) - wins,
        "pnl": round(sum(t["pnl"] for t in trades), 2),
        "halted": halted,
    }
