"""effbench: efficiency benchmarks for image-classification networks.

The one loader of results is :func:`load_results`; everything else is reached through the
``effbench`` command line (``bench.cli``).
"""

from bench.errors import BenchError
from bench.store import load_results

__all__ = ["BenchError", "load_results"]
__version__ = "0.1.0"
