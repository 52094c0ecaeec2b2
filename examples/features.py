"""Tasks of the feature_engineering example: extract daily rows, build features, score them."""

from __future__ import annotations

import datetime as dt
import json
import random
import tempfile
from pathlib import Path
from typing import Any


def _days(start: str, end: str) -> list[dt.date]:
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def extract(start: str, end: str) -> dict[str, Any]:
    """Write one row per day in [start, end] (empty when end < start) to a JSON-lines file."""
    rows = []
    for day in _days(start, end):
        rng = random.Random(day.toordinal())  # the same day always gives the same row
        rows.append(
            {
                "date": day.isoformat(),
                "orders": rng.randint(50, 150),
                "revenue": round(rng.uniform(1e3, 5e3), 2),
            }
        )
    out = Path(tempfile.mkdtemp(prefix="extract-")) / "rows.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"output_path": out, "row_count": len(rows)}


def transform(path: str) -> dict[str, Any]:
    """7-day moving averages per day; quality = share of days with a full window."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    features = []
    for i, row in enumerate(rows):
        window = rows[max(0, i - 6) : i + 1]
        features.append(
            {
                "date": row["date"],
                "orders_7d": sum(r["orders"] for r in window) / len(window),
                "revenue_7d": round(sum(r["revenue"] for r in window) / len(window), 2),
                "complete_window": len(window) == 7,
            }
        )
    out = Path(tempfile.mkdtemp(prefix="features-")) / "features.jsonl"
    out.write_text("".join(json.dumps(f) + "\n" for f in features))
    complete = sum(1 for f in features if f["complete_window"])
    return {
        "quality_score": round(complete / len(features), 4) if features else 0.0,
        "features_path": out,
        "feature_count": len(features),
    }
