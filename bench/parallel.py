"""``effbench run --parallel``: every GPU of one box at once, one lane per GPU.

Without ``--parallel`` the runner measures one group at a time (:func:`bench.runner.
run_interleaved`). With it:

- the groups on ``cuda:N`` are partitioned by device; one thread per device runs that
  device's groups in the order of :func:`bench.runner.interleave` (so the arms of an A/B
  run still alternate on every GPU), each group in a fresh worker through the lane's own
  executor;
- every other group (``cpu``, ``mps``) runs afterwards, alone, one at a time: nothing else
  runs beside a CPU measurement;
- each GPU lane's workers are pinned to a contiguous, disjoint share of the runner's cores
  (:func:`assign_cpus`), recorded in the plan (``Group.cpus``) so that a resume does the
  same, and their intra-op threads are capped at that share;
- rows are still written by this process only: the lane threads write under one lock
  (:class:`Gate`), so the run folders, their progress lines and their counts see one writer;
- a signal arrives in the main thread (:class:`bench.errors.Interrupted`); the main thread
  then closes the gate (nothing more is written), cancels every lane's executor (each
  SIGKILLs its worker's process group), waits for the lane threads and re-raises, so the
  sweep stops within seconds, keeps every row written and leaves no worker behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import threading
from collections.abc import Callable, Sequence
from typing import Any

from bench.errors import Interrupted, InvalidOption
from bench.executor import Executor
from bench.plan import Group
from bench.runner import (
    Lane,
    RunSummary,
    close_lane,
    closing_ceilings,
    interleave,
    remeasure,
    run_group,
)

JOIN_S = 10.0  # how long the main thread waits for cancelled lane threads to end


def is_lane_device(device: str) -> bool:
    """Whether groups on ``device`` get a concurrent lane of their own (a local GPU)."""
    return device.startswith("cuda:")


def split_cores(cores: Sequence[int], n: int) -> list[tuple[int, ...]]:
    """``cores`` (sorted) cut into ``n`` contiguous shares; the first ``len(cores) % n``
    shares get one core more. Refuses fewer cores than shares."""
    cores = sorted(cores)
    if n > len(cores):
        raise InvalidOption(
            f"--parallel needs at least one core per GPU: {n} GPUs, {len(cores)} cores "
            "available to this process; drop --parallel or give it more cores"
        )
    size, extra = divmod(len(cores), n)
    shares, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        shares.append(tuple(cores[start:end]))
        start = end
    return shares


def assign_cpus(groups: Sequence[Group], cores: Sequence[int]) -> tuple[Group, ...]:
    """The plan of a ``--parallel`` run: the groups of the i-th GPU (in order of first
    appearance) pinned to the i-th share of ``cores`` (:func:`split_cores`), their threads
    capped at the share's size; other groups unchanged (they run alone, on every core)."""
    lanes = list(dict.fromkeys(g.device for g in groups if is_lane_device(g.device)))
    if not lanes:
        return tuple(groups)
    share = dict(zip(lanes, split_cores(cores, len(lanes)), strict=True))
    return tuple(
        dataclasses.replace(g, cpus=share[g.device], threads=min(g.threads, len(share[g.device])))
        if g.device in share
        else g
        for g in groups
    )


class LaneStopped(Exception):
    """Raised in a lane thread once the gate is closed: the lane writes nothing more."""


class Gate:
    """The one lock around every write and progress line of the lane threads; once
    :meth:`close`\\ d, entering it raises :class:`LaneStopped`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.closed = False

    def __enter__(self) -> Gate:
        self._lock.acquire()
        if self.closed:
            self._lock.release()
            raise LaneStopped
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def close(self) -> None:
        with self._lock:  # waits for a write in progress to finish
            self.closed = True


def run_parallel(
    lanes: Sequence[Lane],
    make_executor: Callable[[], Executor],
    spec_of: Callable[[str], Any],
    device_name_of: Callable[[str], str],
    argv: Sequence[str] = (),
    cluster_gpus: int = 0,
    wait_for_quiet: Callable[[], Any] | None = None,
) -> list[RunSummary]:
    """Measure ``lanes`` (run folders; the arms of an A/B run) with one concurrent thread
    per GPU, then the other groups alone (see the module's docstring).

    ``cluster_gpus``: on a cluster (Ray) the plan's device is ``cuda`` (any GPU); its groups
    are dealt round-robin to that many lanes, one per GPU of the cluster, so every GPU is
    busy with one group at a time."""
    per_device: dict[str, list[tuple[Lane, Group]]] = {}
    alone: list[tuple[Lane, Group]] = []
    dealt = 0
    for lane, g in interleave(lanes):
        if is_lane_device(g.device):
            per_device.setdefault(g.device, []).append((lane, g))
        elif g.device == "cuda" and cluster_gpus > 0:
            per_device.setdefault(f"cuda-lane{dealt % cluster_gpus}", []).append((lane, g))
            dealt += 1
        else:
            alone.append((lane, g))
    gate = Gate()
    executors: dict[str, Executor] = {}
    errors: list[BaseException] = []

    def lane_main(dev: str) -> None:
        try:
            for lane, g in per_device[dev]:
                if gate.closed:
                    return
                run_group(lane, g, executors[dev], spec_of, device_name_of, guard=gate)
        except LaneStopped:
            pass
        except BaseException as e:  # reported by the main thread
            errors.append(e)
            _stop(gate, executors)

    threads = [
        threading.Thread(target=lane_main, args=(dev,), name=f"effbench-{dev}", daemon=True)
        for dev in per_device
    ]
    try:
        for dev in per_device:
            executors[dev] = make_executor()
            executors[dev].prepare()  # main thread: starting a fork server sets signal handlers
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.2)  # short waits: a signal's handler runs between them
        if errors:
            raise errors[0]
        executor = make_executor()
        for lane, g in alone:
            run_group(lane, g, executor, spec_of, device_name_of)
        # contended cells of every lane again, one group at a time (nothing beside them)
        remeasure(lanes, executor, spec_of, device_name_of, wait_for_quiet)
        closing_ceilings(lanes)
    except BaseException as e:
        _stop(gate, executors)
        for t in threads:
            if t.ident is not None:  # started
                t.join(JOIN_S)
        if isinstance(e, Interrupted):
            for lane in lanes:
                close_lane(lane, argv, interrupted=signal.Signals(e.signum).name)
        raise
    return [close_lane(lane, argv) for lane in lanes]


def _stop(gate: Gate, executors: dict[str, Executor]) -> None:
    """Close the gate first (a killed worker's missing cells must not become rows), then
    kill every lane's worker."""
    gate.close()
    for ex in executors.values():
        with contextlib.suppress(Exception):
            ex.cancel()
