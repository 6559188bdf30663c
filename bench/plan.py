"""The sweep plan: a pure function from options to cells. No torch import.

A *cell* is one (model, device, dtype, batch size, image size, threads, repeat). Cells that
share (model, device, dtype, image size, threads, repeat) form a *group*, which one fresh
worker process measures, walking its batch sizes upward.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from bench.configs import check_allocator, check_config, parse_config
from bench.errors import DeviceUnavailable, InvalidOption
from bench.keys import CellKey, RowKey

DTYPES = ("float32", "float16", "bfloat16")
MACS_COUNTERS = ("torch", "fvcore")


@dataclass(frozen=True, slots=True)
class Timing:
    """How long to warm up and measure each cell (seconds, iterations)."""

    warmup_iters: int = 3
    warmup_time_s: float = 0.2
    min_time_s: float = 1.0
    max_time_s: float = 5.0
    target_ci: float = 0.01
    min_iters: int = 5

    def validate(self) -> None:
        _check_count("--warmup-iters", self.warmup_iters, 0, MAX_ITERS)
        _check_count("--min-iters", self.min_iters, 1, MAX_ITERS)
        _check_seconds("--warmup-time", self.warmup_time_s, 0.0, MAX_CELL_S)
        _check_seconds("--min-time", self.min_time_s, 0.0, MAX_CELL_S)
        _check_seconds("--max-time", self.max_time_s, 0.0, MAX_CELL_S)
        if self.max_time_s <= 0 or self.min_time_s > self.max_time_s:
            raise InvalidOption(
                f"need 0 <= --min-time ({self.min_time_s}) <= --max-time ({self.max_time_s})"
                " and --max-time > 0"
            )
        if not (isinstance(self.target_ci, int | float) and 0 < self.target_ci < 1):
            raise InvalidOption("--target-ci must be a fraction between 0 and 1, e.g. 0.01")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Timing:
        if not isinstance(d, Mapping):
            raise InvalidOption(f"timing must be an object, not {d!r}")
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidOption(f"unknown timing settings {sorted(unknown)}")
        for name in ("warmup_iters", "min_iters"):
            if name in d:
                _expect(d[name], int, name)
        for name in ("warmup_time_s", "min_time_s", "max_time_s", "target_ci"):
            if name in d:
                _expect_number(d[name], name)
        return cls(**d)


# Upper bounds of the numeric options: far above any sensible value, low enough that a typo
# (an extra zero, inf) fails at once instead of running for days.
MAX_CELL_S = 24 * 3600.0
MAX_ITERS = 10**7
MAX_REPEATS = 10_000
MAX_BATCH = 1 << 20
MAX_IMAGE = 1 << 14
# A cell judged `contended` is measured again up to this many times by default, later in the
# sweep and after waiting for a quiet host (docs/noise.md): under intermittent load one
# retry mostly lands in a quiet spell, a second covers a spell that ended early; constant
# load costs at most 3x the sweep, and the rows then say what to do.
REMEASURE = 2
MAX_REMEASURE = 10
# Ping-pong arms (`--pingpong`, bench.pingpong): bursts per arm and cell, and the seconds of
# timed forwards in each; docs/compare.md measures the choice on the 2-core CI machine.
BURSTS = 20
BURST_S = 0.2
MAX_BURSTS = 10_000
MAX_BURST_S = 60.0


def _check_seconds(flag: str, value: float, low: float, high: float) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and low <= value <= high):
        raise InvalidOption(f"{flag} {value!r} must be a number of seconds in [{low:g}, {high:g}]")


def _check_count(flag: str, value: int, low: int, high: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidOption(f"{flag} {value!r} must be an integer in [{low}, {high}]")


def _expect_number(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidOption(f"{name} must be a number, not {value!r}")


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `effbench run` was asked for, before expansion."""

    models: tuple[str, ...]
    batch_sizes: tuple[int, ...] = (1,)
    devices: tuple[str, ...] = ("cpu",)
    dtypes: tuple[str, ...] = ("float32",)
    image_size: int | None = None
    threads: int | None = None
    repeats: int = 1
    macs_counter: str = "torch"
    timing: Timing = field(default_factory=Timing)
    cell_timeout_s: float = 600.0
    memory_cap_bytes: int | None = None
    tf32: bool = False
    configs: tuple[str, ...] = ("eager",)  # canonical configuration names (bench.configs)
    variant: str | None = None  # the name of this run's variant (`--variant`), if any
    env: tuple[tuple[str, str], ...] = ()  # set in every worker before the model is built
    parallel: bool = False  # `--parallel`: one concurrent lane per GPU (bench.parallel)
    python: str | None = None  # the interpreter of this variant's workers (`NAME:python=PATH`)
    ceilings: bool = False  # measure device ceilings at the start (`effbench run` turns it on)
    remeasure: int = REMEASURE  # re-measurements of a cell judged `contended` (bench.quality)
    count_instructions: bool = False  # count CPU cells under valgrind (bench.instructions)
    pingpong: bool = False  # `--pingpong`: the arms alternate bursts (bench.pingpong)
    bursts: int = BURSTS  # bursts per arm and cell in ping-pong
    burst_s: float = BURST_S  # seconds of timed forwards per burst

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Options:
        """Options as recorded in a manifest; wrong types raise :class:`InvalidOption`."""
        if not isinstance(d, Mapping):
            raise InvalidOption(f"options must be an object, not {d!r}")
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise InvalidOption(f"unknown options {sorted(unknown)}")
        d["timing"] = Timing.from_dict(d.get("timing", {}))
        for key in ("models", "devices", "dtypes"):
            d[key] = _str_tuple(d.get(key), key)
        d["configs"] = _str_tuple(d.get("configs", ("eager",)), "configs")
        d["batch_sizes"] = _int_tuple(d.get("batch_sizes"), "batch_sizes")
        for key in ("image_size", "threads", "memory_cap_bytes"):
            if d.get(key) is not None:
                _expect(d[key], int, key)
        if "repeats" in d:
            _expect(d["repeats"], int, "repeats")
        if "remeasure" in d:
            _expect(d["remeasure"], int, "remeasure")
        if "bursts" in d:
            _expect(d["bursts"], int, "bursts")
        if "burst_s" in d:
            _expect_number(d["burst_s"], "burst_s")
        if "cell_timeout_s" in d:
            _expect_number(d["cell_timeout_s"], "cell_timeout_s")
        for key in ("macs_counter",):
            if key in d:
                _expect(d[key], str, key)
        for key in ("parallel", "ceilings", "count_instructions", "pingpong"):
            if key in d:
                _expect(d[key], bool, key)
        env = d.get("env", ())
        if not isinstance(env, list | tuple) or not all(
            isinstance(p, list | tuple) and len(p) == 2 for p in env
        ):
            raise InvalidOption(f"env must be a list of [name, value] pairs, not {env!r}")
        d["env"] = tuple((str(k), str(v)) for k, v in env)
        if d.get("python") is not None:
            _expect(d["python"], str, "python")
        return cls(**d)


@dataclass(frozen=True, slots=True)
class ModelShape:
    """What the plan needs to know of a registered model: its default input (C, H=W)."""

    image_size: int
    in_chans: int = 3


@dataclass(frozen=True, slots=True)
class Inventory:
    """Devices present on this machine: name -> dtypes it can run; the thread count; and
    the ``malloc:`` configuration parts its CPU workers can run (:mod:`bench.allocators`)."""

    devices: Mapping[str, frozenset[str]]
    default_threads: int = 1
    allocators: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Cell:
    model: str
    device: str
    dtype: str
    batch_size: int
    image_size: int
    in_chans: int
    threads: int
    repeat: int
    config: str = "eager"

    @property
    def key(self) -> RowKey:
        """The cell's identity and repeat: one row of a run."""
        return RowKey(
            CellKey(
                self.model,
                self.device,
                self.dtype,
                self.batch_size,
                self.image_size,
                self.threads,
                self.config,
            ),
            self.repeat,
        )


@dataclass(frozen=True, slots=True)
class Group:
    """Cells one worker measures: same model/device/dtype/size/threads/repeat."""

    model: str
    device: str
    dtype: str
    image_size: int
    in_chans: int
    threads: int
    repeat: int
    batch_sizes: tuple[int, ...]
    config: str = "eager"
    cpus: tuple[int, ...] = ()  # cores the worker is pinned to (`--parallel`); () = inherited
    attempt: int = 0  # 0; 1, 2, ... when the runner re-measures contended cells

    def cells(self) -> tuple[Cell, ...]:
        return tuple(
            Cell(
                self.model,
                self.device,
                self.dtype,
                b,
                self.image_size,
                self.in_chans,
                self.threads,
                self.repeat,
                self.config,
            )
            for b in self.batch_sizes
        )

    def with_batch_sizes(self, batch_sizes: tuple[int, ...]) -> Group:
        return dataclasses.replace(self, batch_sizes=batch_sizes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Group:
        """A group as recorded in a manifest; wrong types raise :class:`InvalidOption`."""
        if not isinstance(d, Mapping):
            raise InvalidOption(f"a planned group must be an object, not {d!r}")
        # groups recorded before configurations ran eager, and before --parallel unpinned
        values: dict[str, Any] = {"config": "eager", "cpus": (), "attempt": 0}
        for f in dataclasses.fields(cls):
            if f.name not in d and f.name not in values:
                raise InvalidOption(f"a planned group lacks {f.name!r}")
            values[f.name] = d.get(f.name, values.get(f.name))
        for name in ("model", "device", "dtype", "config"):
            _expect(values[name], str, name)
        for name in ("image_size", "in_chans", "threads", "repeat", "attempt"):
            _expect(values[name], int, name)
        values["batch_sizes"] = _int_tuple(values["batch_sizes"], "batch_sizes")
        values["cpus"] = _int_tuple(values["cpus"], "cpus")
        return cls(**values)


def _expect(value: Any, kind: type, name: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidOption(f"{name} must be {kind.__name__}, not {value!r}")


def _int_tuple(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidOption(f"{name} must be a list of integers, not {value!r}")
    for v in value:
        _expect(v, int, name)
    return tuple(value)


def _str_tuple(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        raise InvalidOption(f"{name} must be a list of names, not {value!r}")
    for v in value:
        _expect(v, str, name)
    return tuple(value)


def expand_devices(requested: tuple[str, ...], inventory: Inventory) -> tuple[str, ...]:
    """Resolve ``cuda`` to every visible ``cuda:N``; refuse devices that are not present."""
    present = list(inventory.devices)
    out: list[str] = []
    for dev in requested:
        if dev == "cuda" and "cuda" in inventory.devices:
            out.append("cuda")  # a cluster (Ray): each group gets one of its GPUs
        elif dev == "cuda":
            gpus = [d for d in present if d.startswith("cuda:")]
            if not gpus:
                raise DeviceUnavailable(
                    "device 'cuda' requested but no CUDA GPU is visible; "
                    "run on a GPU machine or use --devices cpu"
                )
            out.extend(gpus)
        elif dev in inventory.devices:
            out.append(dev)
        elif re.fullmatch(r"cpu|mps|cuda:\d+", dev):
            raise DeviceUnavailable(
                f"device {dev!r} is not present on this machine "
                f"(present: {', '.join(present)}); see `effbench env`"
            )
        else:
            raise InvalidOption(
                f"unknown device {dev!r}; use cpu, cuda, cuda:N or mps (present: "
                f"{', '.join(present)})"
            )
    return tuple(dict.fromkeys(out))


def validate(options: Options, catalog: Mapping[str, ModelShape]) -> None:
    """Raise :class:`InvalidOption` for anything malformed, before anything runs."""
    if not options.models:
        raise InvalidOption("no models to run; pass --models NAME[,NAME] or --suite NAME")
    for name in options.models:
        if name not in catalog:
            raise InvalidOption(f"unknown model {name!r}; see `effbench models`")
    if not options.batch_sizes:
        raise InvalidOption("no batch sizes; pass --batch-sizes 1,2,4")
    for b in options.batch_sizes:
        if b < 1:
            raise InvalidOption(f"batch size {b} is not allowed; batch sizes must be >= 1")
        _check_count("--batch-sizes", b, 1, MAX_BATCH)
    if not options.devices:
        raise InvalidOption("no devices; pass --devices cpu (or cuda, cuda:N, mps)")
    if not options.dtypes:
        raise InvalidOption(f"no dtypes; pass --dtypes with one or more of {', '.join(DTYPES)}")
    for dt in options.dtypes:
        if dt not in DTYPES:
            raise InvalidOption(f"unknown dtype {dt!r}; choose from {', '.join(DTYPES)}")
    if not options.configs:
        raise InvalidOption("no configurations; pass --configs eager (or channels_last, ...)")
    for text in options.configs:
        parse_config(text)
    if options.image_size is not None:
        _check_count("--image-size", options.image_size, 1, MAX_IMAGE)
    if options.threads is not None:
        _check_count("--threads", options.threads, 1, 4096)
    _check_count("--repeats", options.repeats, 1, MAX_REPEATS)
    _check_count("--remeasure", options.remeasure, 0, MAX_REMEASURE)
    _check_count("--bursts", options.bursts, 2, MAX_BURSTS)
    _check_seconds("--burst-time", options.burst_s, 0.001, MAX_BURST_S)
    if options.macs_counter not in MACS_COUNTERS:
        raise InvalidOption(
            f"unknown MACs counter {options.macs_counter!r}; choose {', '.join(MACS_COUNTERS)}"
        )
    if not (
        isinstance(options.cell_timeout_s, int | float)
        and math.isfinite(options.cell_timeout_s)
        and 0 < options.cell_timeout_s <= 7 * MAX_CELL_S
    ):
        raise InvalidOption(
            f"--cell-timeout {options.cell_timeout_s!r} must be a number of seconds in "
            f"(0, {7 * MAX_CELL_S:g}]"
        )
    if options.memory_cap_bytes is not None and options.memory_cap_bytes <= 0:
        raise InvalidOption("--memory-cap must be a positive size, e.g. 512MiB")
    options.timing.validate()


def check_recorded(options: Options, groups: Sequence[Group]) -> None:
    """The command line's range checks (:func:`validate`, :meth:`Timing.validate`) applied
    to a plan read from a manifest, its options and every group: a hand-edited manifest
    must not run what the command line refuses. Whether this machine can run the plan's
    models, devices and threads is :func:`check_runnable`'s question."""
    validate(options, {m: ModelShape(1) for m in options.models})
    for g in groups:
        if not g.batch_sizes:
            raise InvalidOption(f"the group of {g.model} on {g.device} has no batch sizes")
        for b in g.batch_sizes:
            _check_count("batch size", b, 1, MAX_BATCH)
        _check_count("image_size", g.image_size, 1, MAX_IMAGE)
        _check_count("in_chans", g.in_chans, 1, MAX_IMAGE)
        _check_count("threads", g.threads, 1, 4096)
        _check_count("repeat", g.repeat, 0, MAX_REPEATS - 1)
        if g.dtype not in DTYPES:
            raise InvalidOption(f"unknown dtype {g.dtype!r}; choose from {', '.join(DTYPES)}")
        parse_config(g.config)
        for cpu in g.cpus:
            _check_count("cpus", cpu, 0, 1 << 16)


def resolve(options: Options, catalog: Mapping[str, ModelShape], inventory: Inventory) -> Options:
    """``options`` with every machine-dependent default made explicit (threads, ``cuda``
    expanded to ``cuda:N``), after validating them: what the manifest records, so that a
    resume on another machine (or under ``taskset``) runs exactly the same plan."""
    validate(options, catalog)
    devices = expand_devices(options.devices, inventory)
    threads = options.threads or inventory.default_threads
    configs = tuple(dict.fromkeys(parse_config(c).name for c in options.configs))
    return dataclasses.replace(options, devices=devices, threads=threads, configs=configs)


def expand_plan(
    options: Options, catalog: Mapping[str, ModelShape], inventory: Inventory
) -> tuple[Group, ...]:
    """Expand options into groups of cells, in run order.

    Repeats are the outer loop, so that drift over a long sweep hits every repeat alike
    (repeat 0 of every group, then repeat 1, ...). Batch sizes ascend within a group.
    """
    options = resolve(options, catalog, inventory)
    batch_sizes = tuple(sorted(set(options.batch_sizes)))
    assert options.threads is not None
    groups = []
    for repeat in range(options.repeats):
        for model in dict.fromkeys(options.models):
            shape = catalog[model]
            size = options.image_size or shape.image_size
            for dev in options.devices:
                for dt in dict.fromkeys(options.dtypes):
                    for config in options.configs:
                        check_config(parse_config(config), dev, dt)
                        groups.append(
                            Group(
                                model,
                                dev,
                                dt,
                                size,
                                shape.in_chans,
                                options.threads,
                                repeat,
                                batch_sizes,
                                config,
                            )
                        )
    groups_t = tuple(groups)
    check_runnable(groups_t, catalog, inventory)
    return groups_t


def check_runnable(
    groups: Sequence[Group], catalog: Mapping[str, ModelShape], inventory: Inventory
) -> None:
    """Refuse a plan this machine cannot run as planned: a model not registered here, a
    device absent, a dtype the device cannot run, an allocator not installed, more threads
    than available cores."""
    for g in groups:
        if g.model not in catalog:
            raise InvalidOption(
                f"model {g.model!r} of the plan is not registered here; load its plugin "
                "($EFFBENCH_PLUGINS) or see `effbench models`"
            )
        if g.device not in inventory.devices:
            raise DeviceUnavailable(
                f"the plan measures on {g.device}, which is not present on this machine "
                f"(present: {', '.join(inventory.devices)}); run it where that device is"
            )
        config = parse_config(g.config)
        check_config(config, g.device, g.dtype)
        check_allocator(config, inventory.allocators)
        if g.dtype not in inventory.devices[g.device]:
            raise DeviceUnavailable(
                f"dtype {g.dtype} is not supported on {g.device} by this torch build "
                f"(supported: {', '.join(sorted(inventory.devices[g.device]))}); "
                "drop it from --dtypes or choose another device"
            )
        if g.threads > inventory.default_threads:
            raise DeviceUnavailable(
                f"the plan uses {g.threads} threads but only {inventory.default_threads} "
                "cores are available to this process (taskset/cgroup?); give it the cores, "
                "or start a new run with --threads"
            )


def all_cells(groups: tuple[Group, ...]) -> tuple[Cell, ...]:
    return tuple(c for g in groups for c in g.cells())
