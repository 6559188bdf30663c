"""Ray executor vs the fork-server executor on the same cells, interleaved (issue 14).

Two run folders (one per executor) are filled group by group in the A/B order of
``bench.runner.interleave`` (A B, B A, ...), ``--repeats`` fresh-process repeats each.
Prints the median ratio of matched cells' median latencies (ray / fork) and the median
extra wall time a group costs on Ray (its ``run`` call, Ray's start-up excluded).

Run it where Ray may listen (it listens on every interface by default), e.g. in a
loopback-only namespace: ``unshare -n sh -c 'ip link set lo up && python
scripts/executor_overhead.py --out /tmp/exec'``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench import devices, load_results
from bench.executor import ForkServerExecutor
from bench.plan import ModelShape, Options, Timing, expand_plan, resolve
from bench.ray_executor import RayExecutor
from bench.run_folder import start_run
from bench.runner import interleave, open_lane, run_group
from models import get_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--models", default="mobilenet_v3_small,squeezenet1_1")
    ap.add_argument("--batch-sizes", default="1,4")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    inventory = devices.discover()
    names = tuple(args.models.split(","))
    catalog = {n: ModelShape(get_spec(n).image_size, get_spec(n).in_chans) for n in names}
    options = Options(
        models=names,
        batch_sizes=tuple(int(b) for b in args.batch_sizes.split(",")),
        image_size=args.image_size,
        repeats=args.repeats,
        timing=Timing(warmup_iters=2, warmup_time_s=0.2, min_time_s=1.0, max_time_s=2.0),
    )
    options = resolve(options, catalog, inventory)
    groups = expand_plan(options, catalog, inventory)
    env = devices.environment(inventory).to_dict()
    t0 = time.monotonic()
    executors = {"fork": ForkServerExecutor(), "ray": RayExecutor()}
    print(f"Ray started in {time.monotonic() - t0:.1f} s", file=sys.stderr)
    lanes = []
    for name in executors:
        run_dir, lock = start_run(args.out, f"exec-{name}", options, groups, env, sys.argv)
        lanes.append(open_lane(run_dir, run_dir.name, options, groups, lock))
    which = {id(lane): name for lane, name in zip(lanes, executors, strict=True)}
    walls: dict[str, list[float]] = {name: [] for name in executors}
    for lane, g in interleave(lanes):
        name = which[id(lane)]
        start = time.monotonic()
        run_group(lane, g, executors[name], get_spec, devices.device_name)
        walls[name].append(time.monotonic() - start)
    for lane in lanes:
        lane.lock.release()

    key = ["model", "batch_size", "repeat"]
    fork = load_results([args.out / "exec-fork"]).set_index(key)["latency_ms_median"]
    ray = load_results([args.out / "exec-ray"]).set_index(key)["latency_ms_median"]
    ratios = (ray / fork).dropna()
    extra = [r - f for r, f in zip(walls["ray"], walls["fork"], strict=True)]
    print(f"cells matched: {len(ratios)}")
    print(f"median latency ratio ray/fork: {statistics.median(ratios):.4f}")
    print(f"  min {ratios.min():.4f}  max {ratios.max():.4f}")
    print(
        f"median group wall: fork {statistics.median(walls['fork']):.2f} s, "
        f"ray {statistics.median(walls['ray']):.2f} s"
    )
    print(f"median extra wall per group on Ray: {statistics.median(extra):.3f} s")
    per_cell = ratios.groupby(level=["model", "batch_size"]).median()
    print(per_cell.to_string())


if __name__ == "__main__":
    main()
