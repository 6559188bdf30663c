"""``python -m bench.ceilings``: measure and print one JSON object per ceiling."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from bench.ceilings.measure import measure_ceilings
from bench.ceilings.record import KINDS
from bench.errors import BenchError, InvalidOption
from bench.plan import DTYPES


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise InvalidOption(f"{message}; see python -m bench.ceilings --help")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m bench.ceilings",
        description="Measure compute and bandwidth ceilings; one JSON object per line.",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda:N (default cpu)")
    p.add_argument("--dtype", default="float32", help=f"one of {', '.join(DTYPES)}")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--precision", type=float, default=0.02, help="CI target (default 0.02)")
    p.add_argument("--budget-s", type=float, default=1.5, help="seconds per kind (default 1.5)")
    p.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated ({','.join(KINDS)})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print the ceilings as JSON lines; 0 on success, 2 on a suite error
    (message on stderr)."""
    try:
        args = _parser().parse_args(argv)
        threads = args.threads
        if threads is None:
            from bench.devices import default_threads

            threads = default_threads() if args.device == "cpu" else 0
        ceilings = measure_ceilings(
            args.device,
            args.dtype,
            threads,
            precision=args.precision,
            budget_s=args.budget_s,
            kinds=tuple(k for k in args.kinds.split(",") if k),
        )
    except BenchError as e:
        print(f"bench.ceilings: error: {e}", file=sys.stderr)
        return 2
    for c in ceilings:
        print(json.dumps(c.to_dict()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
