"""A row's ``status``: what happened to its cell, declared once. ``ok`` means the cell
ran and was measured (its ``quality`` says how far to trust the numbers); the others say
why there are no numbers. Pure: the standard library only."""

from __future__ import annotations

OK = "ok"  # measured
OOM = "oom"  # out of memory at this batch size
SKIPPED = "skipped"  # not run: a smaller batch size of its group failed first
CRASHED = "crashed"  # the worker died (a signal, an exit without a row)
TIMEOUT = "timeout"  # over --cell-timeout
ERROR = "error"  # an exception, said in the row's error
STATUSES = (OK, OOM, SKIPPED, CRASHED, TIMEOUT, ERROR)
FAILED = (OOM, CRASHED, TIMEOUT, ERROR)  # a cell that should have given numbers and did not
