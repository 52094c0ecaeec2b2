"""Tasks of the feature_engineering_spark example (seed 004): extract, Spark transform.

`extract` writes daily sales of three stores as Parquet (deterministic: a
day's numbers come from the store and the date); `daily_features` is the
Spark job: 7-day moving averages per store and the share of complete windows.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

STORES = ("beijing", "shanghai", "shenzhen")
WINDOW = 7


def extract(start: str, end: str) -> dict[str, Any]:
    """One row per store and day in [start, end] (none when end < start).

    Returns `sales` (a Parquet file: store, day as YYYY-MM-DD, orders, revenue)
    and `row_count`."""
    first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    days = [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]
    rows: dict[str, list[Any]] = {"store": [], "day": [], "orders": [], "revenue": []}
    for store in STORES:
        for day in days:
            rng = random.Random(f"{store}/{day.isoformat()}")
            rows["store"].append(store)
            rows["day"].append(day.isoformat())
            rows["orders"].append(rng.randint(50, 150))
            rows["revenue"].append(round(rng.uniform(1e3, 5e3), 2))
    out = Path(tempfile.mkdtemp(prefix="sales-")) / "sales.parquet"
    pq.write_table(pa.table(rows), out)
    return {"sales": out, "row_count": len(rows["store"])}


def daily_features(spark: Any, sales: str) -> dict[str, Any]:
    """7-day moving averages of orders and revenue per store and day.

    Returns `features` (a DataFrame: the executor stores it as a Parquet
    artifact), `feature_count` and `quality_score` (the share of rows whose
    window holds 7 days, rounded to 4 places)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    window = Window.partitionBy("store").orderBy("day").rowsBetween(-(WINDOW - 1), 0)
    features = spark.read.parquet(sales).select(
        "store",
        "day",
        F.round(F.avg("orders").over(window), 2).alias("orders_7d"),
        F.round(F.avg("revenue").over(window), 2).alias("revenue_7d"),
        (F.count("*").over(window) == WINDOW).alias("complete_window"),
    )
    features = features.orderBy("store", "day").cache()
    total = features.count()
    complete = features.where("complete_window").count()
    return {
        "features": features,
        "feature_count": total,
        "quality_score": round(complete / total, 4) if total else 0.0,
    }
