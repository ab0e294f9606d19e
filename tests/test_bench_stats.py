"""The benchmark report's arithmetic (bench/stats.py): percentiles, ratios to the best peer, tables."""

from __future__ import annotations

import math
from typing import Any

from bench.stats import Section, Table, fmt, percentile, ratio, summary


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 11)]
    assert percentile(values, 0.9) == 9.0
    assert percentile(values, 0.5) == 5.0
    assert percentile(values, 1.0) == 10.0
    assert percentile([3.0], 0.99) == 3.0
    assert math.isnan(percentile([], 0.9))


def test_summary_has_median_p90_max_and_count() -> None:
    assert summary([0.3, 0.1, 0.2]) == {"median": 0.2, "p90": 0.3, "max": 0.3, "n": 3}
    assert summary([])["n"] == 0 and math.isnan(summary([])["median"])


def test_ratio_is_ours_over_the_best_peer_in_the_right_direction() -> None:
    assert ratio(0.5, [1.0, 2.0]) == "0.50x"  # times: the lowest peer is the best
    assert ratio(100.0, [50.0, 200.0], lower_is_better=False) == "0.50x"  # rates: the highest
    assert ratio(1.0, [math.nan, 2.0]) == "0.50x"  # a peer without a figure is left out
    assert ratio(1.0, [math.nan]) == "-"
    assert ratio(math.nan, [1.0]) == "-"
    assert ratio(0.0, [0.0]) == "1.00x"
    assert ratio(3.0, [0.0]) == "-"


def test_numbers_are_formatted_for_reading() -> None:
    assert fmt(0.1234) == "0.123"
    assert fmt(1.5) == "1.50"
    assert fmt(12345.6) == "12,346"
    assert fmt(3.0) == "3"
    assert fmt(0.0123, "ms") == "12"
    assert fmt(math.nan) == "-" and fmt(None) == "-"


def test_a_section_renders_markdown_tables_with_right_aligned_figures() -> None:
    table = Table(["app", "supervisor", "peer"])
    table.add("median (s)", 0.25, 0.5)
    section = Section("key", "1. Title", "What it measures.", [table], notes=["A note."])
    assert section.markdown() == ("## 1. Title\n\nWhat it measures.\n\n| app | supervisor | peer |\n"
                                  "| --- | ---: | ---: |\n| median (s) | 0.250 | 0.500 |\n\nA note.\n")


def test_a_rerun_replaces_its_scenarios_and_the_header_says_when() -> None:
    from bench.run import header, updated

    previous: dict[str, Any] = {"generated_at": 0.0, "command": "python bench/run.py", "minutes": 27.0,
                                "load_average": 0.6, "scenarios": {"idle": {"old": 1}, "serving": {"kept": 1}}}
    rerun: dict[str, Any] = {"generated_at": 3600.0, "command": "python bench/run.py --only idle --update",
                             "minutes": 6.0, "load_average": 0.4, "scenarios": {"idle": {"new": 1}}}
    merged = updated(previous, rerun)
    assert merged["scenarios"] == {"idle": {"new": 1}, "serving": {"kept": 1}}
    assert merged["generated_at"] == 0.0 and previous["scenarios"]["idle"] == {"old": 1}
    assert "Measured again by `python bench/run.py --only idle --update` on 1970-01-01 01:00 UTC in 6 minutes " \
           "(load average 0.4 at the end): idle." in header(merged)


def test_the_instruction_counts_render_as_uvicorns_over_ours_and_errors_become_notes() -> None:
    from bench.scenario_serving import instructions_table

    notes: list[str] = []
    tables = instructions_table("starlette", {"asyncio+h11": {"uvicorn": 700_000.0, "ours": 690_000.0},
                                              "uvloop+httptools": {"error": "uvloop is not installed\nmore"}}, notes)
    assert tables[0].rows == [["asyncio+h11", "700,000", "690,000", "1.014x"]]
    assert notes == ["starlette uvloop+httptools: instructions not counted: uvloop is not installed"]
    assert instructions_table("webapp", {"error": "valgrind is not installed"}, notes) == []
    assert notes[-1] == "webapp: instructions per request not counted: valgrind is not installed"
