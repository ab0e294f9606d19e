"""Summaries and Markdown tables for the benchmark report. Pure: numbers in, text out."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OURS = "supervisor"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (``fraction`` 0.9 for p90); nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    """median, p90 and max of ``values`` (nan when there are none)."""
    if not values:
        return {"median": math.nan, "p90": math.nan, "max": math.nan, "n": 0}
    return {"median": statistics.median(values), "p90": percentile(values, 0.9), "max": max(values),
            "n": len(values)}


def ratio(ours: float, peers: Sequence[float], lower_is_better: bool = True) -> str:
    """Ours against the best peer (``0.50x``: half the best peer's figure), or ``-`` when undefined."""
    usable = [p for p in peers if p is not None and not math.isnan(p)]
    if math.isnan(ours) or not usable:
        return "-"
    best = min(usable) if lower_is_better else max(usable)
    if best == 0:
        return "-" if ours else "1.00x"
    return f"{ours / best:.2f}x"


def fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, str):
        return value
    if unit == "ms":
        return f"{value * 1000:,.0f}"
    if isinstance(value, int) or float(value).is_integer() or abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.3f}"


@dataclass
class Table:
    """A Markdown table: a header row, then rows of already formatted cells."""

    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def add(self, *cells: Any) -> None:
        self.rows.append([c if isinstance(c, str) else fmt(c) for c in cells])

    def markdown(self) -> str:
        align = ["---"] + ["---:"] * (len(self.header) - 1)
        lines = ["| " + " | ".join(self.header) + " |", "| " + " | ".join(align) + " |"]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Section:
    """One scenario's part of the report: prose, tables, and the raw figures for the JSON."""

    key: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        parts = [f"## {self.title}", "", self.intro]
        for table in self.tables:
            parts += ["", table.markdown()]
        for note in self.notes:
            parts += ["", note]
        return "\n".join(parts) + "\n"
