"""The summary table as a person reads it (bench/report/summary.py, page.py): numbers with
thousands separators and no exponent, a main table narrow enough for a 1280-pixel screen
with the other columns folded under it, and the page's style sheet and script shipped as
package data. The rows are SYNTHETIC (``factories.make_row``), never measured."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import tomllib
from factories import make_row
from test_report import write_run

from bench.report.data import load_report_data
from bench.report.page import STATIC, index_html, static_text
from bench.report.summary import SUMMARY_COLUMNS, significant, summary_markdown, summary_table

ROOT = Path(__file__).resolve().parent.parent
MAIN_COLUMNS_MAX = 15


@pytest.mark.parametrize(
    ("value", "text"),
    [(1320.4, "1,320"), (1_234_567.0, "1,230,000"), (12.345, "12.3"), (12.0, "12"),
     (0.5, "0.5"), (0.012345, "0.0123"), (0.00001234, "0.0000123"), (999.96, "1,000"),
     (-1320.4, "-1,320"), (0.0, "0")],
)  # fmt: skip
def test_numbers_are_written_for_people(value: float, text: str) -> None:
    assert significant(value) == text


def _slow_run(root: Path) -> Path:
    """SYNTHETIC: a network at 1320.4 ms per image (the issue's 1.32e+03) and a fast one."""
    rows = [
        make_row("slow", 1, latency_ms_median=1320.4, time_per_image_ms=1320.4,
                 throughput_ips=0.757, params=61_100_840, top1=56.5),
        make_row("fast", 1, latency_ms_median=2.5, time_per_image_ms=2.5, throughput_ips=4000.0,
                 params=1_235_496, top1=58.2, quality="noisy", quality_reason="wide"),
    ]  # fmt: skip
    return write_run(root, "slow", rows)


def _tables(page: str) -> list[str]:
    return re.findall(r'<div class="table-wrap summary"><table.*?</table></div>', page, re.S)


def test_the_summary_shows_1320_ms_with_a_separator_not_an_exponent(tmp_path: Path) -> None:
    data = load_report_data([_slow_run(tmp_path)])
    table = summary_table(data)
    page, md = index_html(data, table, [], {}), summary_markdown(data, table, [])
    main = _tables(page)[0]
    assert ">1,320</td>" in main and ">4,000.0</td>" in main
    assert "| 1,320 |" in md
    assert not re.search(r"\de[+-]\d", main + md)


def test_the_page_summary_has_main_columns_and_the_rest_folded(tmp_path: Path) -> None:
    data = load_report_data([_slow_run(tmp_path)])
    table = summary_table(data)
    main, more = _tables(index_html(data, table, [], {}))
    heads = [re.findall(r"<th(?: [^>]*)?>(.*?)</th>", t) for t in (main, more)]
    shown = {c.heading: c for c in SUMMARY_COLUMNS if c.key in table.columns}
    assert len(heads[0]) <= MAIN_COLUMNS_MAX
    assert heads[0] == [h for h, c in shown.items() if not c.more]
    assert heads[1] == ["network", *(h for h, c in shown.items() if c.more)]
    assert "quality" in heads[0] and "repeats" in heads[1]


def test_the_page_style_and_script_are_package_data() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["bench.report"]
    base = ROOT / "bench" / "report"
    shipped = {p for pattern in patterns for p in base.glob(pattern)}
    files = {p for p in (base / STATIC).rglob("*") if p.is_file()}
    assert files and files <= shipped, sorted(map(str, files - shipped))
    for name in ("report.css", "report.js"):
        assert static_text(name) == (base / STATIC / name).read_text()
