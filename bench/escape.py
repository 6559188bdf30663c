"""Untrusted text (model, device and run names, error messages, paths) made safe for the
outputs that show it: markdown that renders no HTML, links or table breaks, and CSV cells
that spreadsheets do not run as formulas. Pure Python."""

from __future__ import annotations

import html
import re

# Backslash-escaped in markdown: code spans, emphasis, links/images, table cells,
# strikethrough. An underscore inside a word is no emphasis, so it is left readable.
_MARKDOWN = re.compile(r"[\\`*\[\]|~]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_BREAKS = re.compile(r"[\x00-\x1f\x7f]+")
# A cell starting with one of these is a formula (or becomes one) in Excel, LibreOffice
# and Google Sheets (OWASP, "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def markdown_text(value: object) -> str:
    """``value`` as literal markdown text on one line: HTML special characters become
    entities, markdown syntax is backslash-escaped, line breaks and control characters
    become spaces."""
    text = html.escape(_BREAKS.sub(" ", str(value)), quote=False)
    return _MARKDOWN.sub(lambda m: "\\" + m.group(0), text)


def csv_text(value: object) -> object:
    """``value`` unchanged unless it is text a spreadsheet would run as a formula; that
    gets a leading ``'``. Numbers stay numbers (a negative number is not text)."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value
