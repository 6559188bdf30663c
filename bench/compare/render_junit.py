"""A comparison as JUnit XML: one test case per (cell, metric); a failure per regression, a
skip per inconclusive cell and per baseline cell the candidate did not measure."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from bench.compare.results import CellResult, Comparison
from bench.compare.settings import Metric
from bench.compare.text import cell_name, fmt_ratio, fmt_value, plain


def to_junit(c: Comparison) -> str:
    """JUnit XML: one test case per (cell, metric); a failure per regression, a skip per
    inconclusive cell and per baseline cell the candidate did not measure."""
    suite = ET.Element(
        "testsuite",
        name="effbench compare",
        tests=str(len(c.results) + len(c.only_baseline)),
        failures=str(c.count("regression")),
        errors="0",
        skipped=str(c.count("inconclusive") + len(c.only_baseline)),
    )
    for r in c.results:
        case = ET.SubElement(
            suite, "testcase", classname=f"effbench.{r.metric}", name=cell_name(r.key)
        )
        detail = _detail(r, c.settings.metric(r.metric))
        if r.verdict == "regression":
            ET.SubElement(case, "failure", message=detail, type="regression").text = detail
        elif r.verdict == "inconclusive":
            ET.SubElement(case, "skipped", message=detail)
        else:
            ET.SubElement(case, "system-out").text = detail
    for k in c.only_baseline:
        case = ET.SubElement(suite, "testcase", classname="effbench.unmatched", name=cell_name(k))
        ET.SubElement(case, "skipped", message="in the baseline but not in the candidate")
    root = ET.Element("testsuites")
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _detail(r: CellResult, m: Metric) -> str:
    return (
        f"{r.shown_verdict}: ratio {fmt_ratio(r.ratio)} interval "
        f"[{fmt_ratio(r.ci_low)}, {fmt_ratio(r.ci_high)}] baseline "
        f"{fmt_value(r.base_value, m)} candidate {fmt_value(r.cand_value, m)} "
        f"repeats {r.n_base}/{r.n_cand} ({r.evidence}) {plain(r.note)}".strip()
    )
