"""Tasks of the financial_report example (seed 000): plan, collect, summarise, save the report.

The sample data is bundled in `data/`: stock money flows for 8 markets x 4
periods (`data/stock/<market>_<period>.json`) and sector money flows for 3
kinds x 3 periods (`data/sector/<kind>_<period>.json`). Each file is
`{"market"|"kind": ..., "period": ..., "items": [...]}`.
"""

from __future__ import annotations

import datetime as dt
import json
import tempfile
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
MARKETS = ("all", "sh_a", "sz_a", "bj_a", "sh_main", "sz_main", "gem", "star")
STOCK_PERIODS = ("today", "3d", "5d", "10d")
SECTOR_KINDS = ("industry", "concept", "region")
SECTOR_PERIODS = ("today", "5d", "10d")
TOP = 5


def plan() -> dict[str, Any]:
    """The groups to collect: `stock_groups` (32 of {market, period, path}) and
    `sector_groups` (9 of {kind, period, path}); `path` is relative to the data root."""
    stock = [
        {"market": m, "period": p, "path": f"stock/{m}_{p}.json"}
        for m in MARKETS
        for p in STOCK_PERIODS
    ]
    sector = [
        {"kind": k, "period": p, "path": f"sector/{k}_{p}.json"}
        for k in SECTOR_KINDS
        for p in SECTOR_PERIODS
    ]
    return {"stock_groups": stock, "sector_groups": sector}


def _pages(groups: list[dict[str, Any]], fetched: list[Any] | None) -> list[dict[str, Any]]:
    """The JSON documents of `groups`: the `json` of the http items when fetched, else the files."""
    if fetched:
        if len(fetched) != len(groups):
            raise ValueError(f"fetched {len(fetched)} pages for {len(groups)} groups")
        return [page["json"] for page in fetched]
    return [json.loads((DATA / g["path"]).read_text(encoding="utf-8")) for g in groups]


def collect_stock(
    groups: list[dict[str, Any]], batch: str, fetched: list[Any] | None = None
) -> dict[str, Any]:
    """Flatten the stock pages into `rows` (one per stock and group, tagged with `batch`),
    plus `groups` (how many pages) and `top` (the TOP largest net inflows over all groups)."""
    rows: list[dict[str, Any]] = []
    for page in _pages(groups, fetched):
        for item in page["items"]:
            rows.append(
                {
                    "batch": batch,
                    "market": page["market"],
                    "period": page["period"],
                    "code": item["code"],
                    "name": item["name"],
                    "price": item["price"],
                    "change_pct": item["change_pct"],
                    "main_net_inflow": item["main_net_inflow"],
                }
            )
    top = sorted(rows, key=lambda r: (-r["main_net_inflow"], r["code"], r["market"]))[:TOP]
    return {"rows": rows, "groups": len(groups), "top": top}


def collect_sector(
    groups: list[dict[str, Any]], batch: str, fetched: list[Any] | None = None
) -> dict[str, Any]:
    """Flatten the sector pages into `rows` (one per sector and group, tagged with `batch`),
    plus `groups` and `top` (the TOP largest net inflows over all groups)."""
    rows: list[dict[str, Any]] = []
    for page in _pages(groups, fetched):
        for item in page["items"]:
            rows.append(
                {
                    "batch": batch,
                    "kind": page["kind"],
                    "period": page["period"],
                    "sector": item["sector"],
                    "change_pct": item["change_pct"],
                    "main_net_inflow": item["main_net_inflow"],
                    "leader": item["leader"],
                }
            )
    top = sorted(rows, key=lambda r: (-r["main_net_inflow"], r["sector"], r["kind"]))[:TOP]
    return {"rows": rows, "groups": len(groups), "top": top}


def save_report(
    batch: str,
    analysis: str,
    model: str,
    usage: dict[str, Any],
    stock_rows: int,
    sector_rows: int,
) -> dict[str, Any]:
    """Write the report as `<timestamp>_report.json` (timestamp `YYYYmmddTHHMMSSZ`, UTC).

    Returns `analysis_reports` (the file: the engine copies it to the artifact
    store under `<execution>/save_report/analysis_reports/<timestamp>_report.json`)
    and `name` (the file name)."""
    now = dt.datetime.now(dt.UTC)
    name = f"{now:%Y%m%dT%H%M%SZ}_report.json"
    report = {
        "batch": batch,
        "generated_at": now.isoformat(timespec="seconds"),
        "model": model,
        "usage": usage,
        "stock_rows": stock_rows,
        "sector_rows": sector_rows,
        "analysis": analysis,
    }
    out = Path(tempfile.mkdtemp(prefix="analysis-reports-")) / name
    out.write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {"analysis_reports": out, "name": name}
