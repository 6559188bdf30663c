"""bench/escape.py: untrusted names as literal markdown text and as inert CSV cells."""

from __future__ import annotations

import re

import pytest

from bench.escape import csv_text, markdown_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("<script>x</script>", "&lt;script&gt;x&lt;/script&gt;"),
        ("a|b", "a\\|b"),
        ("[t](javascript:x)", "\\[t\\](javascript:x)"),
        ("*b* `c` ~d~", "\\*b\\* \\`c\\` \\~d\\~"),
        ("_e_ f_g", "\\_e\\_ f_g"),  # inside a word an underscore is no emphasis
        ("two\nlines\r\x00", "two lines "),  # a run of breaks is one space
        ("back\\slash", "back\\\\slash"),
    ],
)
def test_markdown_text_is_literal_on_one_line(raw: str, shown: str) -> None:
    assert markdown_text(raw) == shown


def test_markdown_text_leaves_plain_names_alone() -> None:
    for name in ("resnet18", "mobilenet_v3_small", "NVIDIA H200 · float16 · 8 thr", "v1.2-rc"):
        assert markdown_text(name) == name
    assert not re.search(r"[<>]", markdown_text("<<>>"))


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_csv_text_defuses_formula_starts(start: str) -> None:
    assert csv_text(f"{start}SUM(A1)") == f"'{start}SUM(A1)"


def test_csv_text_keeps_numbers_and_plain_text() -> None:
    assert csv_text(-2.5) == -2.5 and csv_text(-3) == -3
    assert csv_text("resnet18") == "resnet18" and csv_text("a=b") == "a=b"
    assert csv_text(None) is None
