"""Examples printed under each subcommand's ``--help`` (its epilog). Pure data: the command
line adds them, and tests/test_cli.py parses every example with the real parser, so an
example cannot name an option that does not exist."""

from __future__ import annotations

EXAMPLES: dict[str, tuple[tuple[str, str], ...]] = {
    "run": (
        ("effbench run", "the default sweep for this machine's devices"),
        (
            "effbench run --suite smoke --batch-sizes 1,8 --dtypes float32,bfloat16",
            "a named suite at chosen batch sizes and dtypes",
        ),
        (
            "effbench run --models resnet18,mobilenet_v2 --threads 1 --repeats 3",
            "one core per cell, three fresh-process repeats (steadier on a shared machine)",
        ),
        ("effbench run --require-quiet --suite smoke", "CI: exit 2 at once on a busy host"),
        ("effbench run --resume results/RUN_ID", "finish an interrupted run"),
        (
            "effbench run --models resnet18 --variant base --variant arena2:MALLOC_ARENA_MAX=2",
            "an interleaved A/B run of one environment variable",
        ),
        (
            "effbench run --models resnet18 --pingpong --repeats 10 "
            "--variant base:python=../base/.venv/bin/python --variant pr:python=.venv/bin/python",
            "two code versions, each arm in its own interpreter",
        ),
    ),
    "models": (
        ("effbench models", "every registered network and its reference figures"),
        ("effbench models --suites", "the named suites"),
        ("effbench models --suite canziani --format json", "one suite, with each figure's source"),
    ),
    "inspect": (
        ("effbench inspect resnet18", "per-layer shapes, parameters, MACs, receptive fields"),
        ("effbench inspect alexnet --image-size 256 --format csv", "at another input size"),
    ),
    "show": (
        ("effbench show results/RUN_ID", "one run's summary, with each row's quality verdict"),
        ("effbench show results --format csv", "every run under results/, as CSV"),
    ),
    "env": (
        ("effbench env", "this machine's environment record"),
        ("effbench env --format json", "the record as a manifest stores it"),
    ),
    "peak": (
        ("effbench peak", "this machine's measured ceilings: GEMM, 3x3 conv, triad, copy"),
        (
            "effbench peak --devices cuda --dtypes float16,bfloat16 --format json",
            "every GPU, in two dtypes",
        ),
    ),
    "profile": (
        ("effbench profile resnet18 mobilenet_v2", "where each network's forward spends time"),
        (
            "effbench profile mobilenet_v2 --batch-size 8 --out results/profiles",
            "kept as parquet for the report",
        ),
    ),
    "compare": (
        ("effbench compare results/base results/pr", "every metric with data, Markdown"),
        (
            "effbench compare results/base results/pr --metric latency --threshold 3% "
            "--format junit --out gate.xml",
            "latency only, for a CI test report",
        ),
        (
            "effbench compare results/ab-base results/ab-pr --test rank --latency-stat p10",
            "the arms of an A/B run (--run-id ab) on a noisy machine",
        ),
    ),
    "report": (
        ("effbench report results --out reports/latest", "figures and pages of every run"),
        (
            "effbench report results/RUN_A results/RUN_B",
            "two runs in one report (reports/2-runs-DIGEST)",
        ),
    ),
}


def epilog(command: str) -> str:
    """The ``examples:`` block of ``command``'s help: one command a line, then what it does."""
    lines = ["examples:"]
    for cmd, what in EXAMPLES.get(command, ()):
        lines += [f"  {cmd}", f"      {what}"]
    return "\n".join(lines)
