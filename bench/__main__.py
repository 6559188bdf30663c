"""`python -m bench`: the effbench command line."""

from bench.cli import entry

entry()
