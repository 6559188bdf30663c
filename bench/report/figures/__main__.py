"""``python -m bench.report.figures``: the table of figures docs/report.md carries."""

from bench.report.figures import markdown_table

print(markdown_table(), end="")
