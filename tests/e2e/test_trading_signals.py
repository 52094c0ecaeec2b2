"""examples/trading_signals.yaml (seed 001) through `whenflow run --json`: trades run per
signal while the feed runs, and the risk check stops the feed at the Nth loss."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import EXAMPLES, run_json


def test_trading_signals_trades_per_signal_and_stops_the_feed_at_the_third_loss(
    tmp_path: Path,
) -> None:
    result = run_json(tmp_path, "run", EXAMPLES / "trading_signals.yaml")
    assert result["status"] == "completed", result["error"]
    events = [e for e in result["events"] if e != "price.tick"]
    nodes = result["nodes"]
    assert nodes["price"]["status"] == "stopped"
    assert nodes["risk"]["status"] == "completed"

    signals = events.count("price.buy_signal")
    trades = nodes["trader"]["outputs"]["results"]
    # One trader instance per buy signal, in signal order.
    assert events.count("trader.item_started") == signals
    assert [t["signal"] for t in trades] == list(range(signals))
    assert result["outputs"]["trades"] == signals
    # Trades start (and finish) before the feed ends.
    assert events.index("trader.item_completed") < events.index("price.stopped")
    # The risk check starts right at the third loss, while the feed runs, and stops it.
    third_loss = [i for i, e in enumerate(events) if e == "trader.loss"][2]
    assert events[third_loss + 1] == "risk.started"
    assert third_loss < events.index("risk.completed") < events.index("price.stopped")
    assert nodes["risk"]["outputs"]["losses"] == 3
    # The trader ends after its source, then the report.
    assert events.index("price.stopped") < events.index("trader.completed")
    assert events[-3:] == ["report.started", "report.completed", "pipeline.completed"]
    assert result["outputs"]["halted"] is True
    assert result["outputs"]["losses"] >= 3
