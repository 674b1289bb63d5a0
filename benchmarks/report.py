"""Print benchmark results as a table and keep them in benchmarks/results/*.json."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version()}


def record(name: str, rows: list[tuple[str, Any, str]]) -> None:
    """Print `rows` (metric, value, target) and save them with the machine and command."""
    width = max(len(r[0]) for r in rows)
    print(f"\n== {name} ==")
    for metric, value, target in rows:
        shown = f"{value:.2f}" if isinstance(value, float) else str(value)
        print(f"  {metric:<{width}}  {shown:>12}  {target}")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({
        "name": name, "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(), "command": " ".join(sys.argv),
        "results": [{"metric": m, "value": v, "target": t} for m, v, t in rows],
    }, indent=2) + "\n")


__all__ = ["machine", "percentile", "record", "statistics"]
