"""A stand-in for ``python -m bench.worker`` that pretends to measure on a GPU (for
``tests/test_parallel.py`` on a machine without one). Run as a script.

It reads a task on stdin like the real worker, pins itself with the real worker's
:func:`bench.worker.pin_to_cpus`, then per batch size sends ``start``, sleeps
``$FAKE_CELL_S`` seconds of CPU-free "measurement" and sends an ``ok`` row. Each cell
appends one JSON line to ``$FAKE_LOG``: device, batch size, start and end (``time.time``),
pid and the affinity seen from inside. A model named ``hang`` hangs at batch sizes >= 2
(after logging ``{"hang": pid}``), like a hung cell.
"""

from __future__ import annotations

import json
import os
import sys
import time

from bench.worker import Task, base_row, pin_to_cpus


def main() -> None:
    task = Task.from_json(sys.stdin.read())
    pin_to_cpus(task.group.cpus)
    g, log = task.group, os.environ["FAKE_LOG"]
    cell_s = float(os.environ.get("FAKE_CELL_S", "0.5"))

    def emit(msg: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()

    def record(entry: dict[str, object]) -> None:
        with open(log, "a") as f:  # one short append per line
            f.write(json.dumps(entry) + "\n")

    for b in g.batch_sizes:
        emit({"event": "start", "batch_size": b})
        if g.model == "hang" and b >= 2:
            record({"hang": os.getpid(), "device": g.device})
            time.sleep(60)
        t0 = time.time()
        time.sleep(cell_s)
        t1 = time.time()
        record(
            {
                "device": g.device,
                "model": g.model,
                "batch_size": b,
                "start": t0,
                "end": t1,
                "pid": os.getpid(),
                "cpus": sorted(os.sched_getaffinity(0)),
                "omp": os.environ.get("OMP_NUM_THREADS"),
            }
        )
        row = base_row(task, b, "ok", spec=None, device_name="fake GPU", timed_s=t1 - t0)
        emit({"event": "row", "row": row.to_dict()})
    emit({"event": "done"})


if __name__ == "__main__":
    main()
