"""A dynamo backend that always fails, used only in tests: `--configs compile:effbench_broken`
simulates a compiler that is missing or crashes (no C++ compiler, an inductor error)."""

from __future__ import annotations

from torch._dynamo import register_backend


@register_backend(name="effbench_broken")
def effbench_broken(gm: object, example_inputs: object) -> object:
    raise RuntimeError("simulated compiler failure: no C++ compiler found")
