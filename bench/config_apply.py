"""Apply a configuration (:mod:`bench.configs`): place the model, shape the input, compile,
and check the output against eager float32. Imports torch; used by the workers, and through
:func:`prepare_cell` by `profile`, the instruction counts and gpu_check.

Compilation is per cell: dynamo is reset and the model compiled with ``dynamic=False`` for
that batch size, then called until a call compiles nothing new (at least three calls for
``cudagraphs``, whose CUDA graphs are recorded on the second and third). ``compile_s`` is
the wall time of the calls that compiled or recorded, forward included; it is never part
of the latency. A recompilation inside the timed loop (dynamo compiled a frame there) sets
``recompiled``. ``graph_breaks`` is dynamo's count of graph breaks while compiling.

Correctness: after the timed window closes (so the check never touches the measured peak
memory), the configured model's output for the cell's input is compared with the eager
float32 output of the same weights (kept in a file in the worker's scratch folder, not in
memory) on the same input: ``max_abs_err``, ``max_rel_err`` (÷ the largest |reference|)
and ``output_ok`` (``max_rel_err`` within :data:`bench.configs.TOLERANCE` of the row's
dtype).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from bench.configs import TOLERANCE, Config

MAX_COMPILE_CALLS = 10


def place_model(model: Any, config: Config, device: str, dtype: torch.dtype) -> Any:
    """The model on ``device``: in ``dtype``, or float32 under autocast; channels_last."""
    model = model.to(device=device, dtype=torch.float32 if config.autocast else dtype)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def make_input(x: torch.Tensor, config: Config, device: str, dtype: torch.dtype) -> Any:
    x = x.to(device=device, dtype=torch.float32 if config.autocast else dtype)
    if config.channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def forward_of(model: Any, config: Config, device: str, dtype: torch.dtype, x: Any) -> Callable:
    """One forward of ``model`` on ``x`` under the configuration's autocast, if any."""
    if not config.autocast:
        return lambda: model(x)
    kind = device.split(":")[0]

    def forward() -> Any:
        with torch.autocast(device_type=kind, dtype=dtype):
            return model(x)

    return forward


@dataclass(frozen=True, slots=True)
class PreparedCell:
    """A network ready to time for one (device, dtype, configuration) and one input batch:
    the placed model, the input, the forward to call and the device's synchronisation
    (timm's ``BenchmarkRunner`` plays this part there). `profile`, the instruction counts
    and gpu_check's Timer check start from it; the worker and the ping-pong worker make the
    same pieces in two steps, because their memory baseline and per-cell compilation come
    between placing the model and making each batch size's input."""

    model: Any
    x: Any
    forward: Callable[[], Any]
    sync: Callable[[], None]


def seeded_input(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    """A float32 CPU batch of standard normal values from a generator of its own."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def prepare_cell(
    model: Any,
    input_shape: tuple[int, ...],
    config: Config,
    device: str,
    dtype: torch.dtype,
    seed: int = 0,
) -> PreparedCell:
    """``model`` (built; its weights as they are) placed by :func:`place_model`, a seeded
    input of ``input_shape`` made by :func:`make_input`, its forward (:func:`forward_of`)
    and the device's synchronisation, with the device set up as the worker's is without
    ``--tf32`` (:func:`bench.devices.use_device`)."""
    from bench.devices import synchronizer, use_device

    use_device(device)
    model = place_model(model, config, device, dtype)
    x = make_input(seeded_input(input_shape, seed), config, device, dtype)
    return PreparedCell(model, x, forward_of(model, config, device, dtype, x), synchronizer(device))


def compile_events() -> int:
    """Frames dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["frames"]["total"])


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters

    return int(sum(counters["graph_break"].values()))


@dataclass(frozen=True, slots=True)
class Compiled:
    forward: Callable[[], Any]
    compile_s: float
    graph_breaks: int
    calls: int


def compile_for_cell(
    model: Any, config: Config, forward_with: Callable[[Any], Callable], sync: Callable
) -> Compiled:
    """Compile ``model`` for this cell and call it until compilation (and, for
    ``cudagraphs``, graph recording) is done; see the module docstring."""
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=config.backend, mode=config.mode, dynamic=False)
    forward = forward_with(compiled)
    breaks0 = _graph_breaks()
    least = 3 if config.compiler == "cudagraphs" else 1
    spent, calls = 0.0, 0
    while calls < MAX_COMPILE_CALLS:
        before = compile_events()
        sync()
        t0 = time.perf_counter()
        forward()
        sync()
        took = time.perf_counter() - t0
        calls += 1
        compiled_now = compile_events() != before
        if compiled_now or calls <= least:
            spent += took
        if not compiled_now and calls >= least + 1:
            break
    return Compiled(forward, spent, _graph_breaks() - breaks0, calls)


def first_tensor(out: Any) -> torch.Tensor:
    """The logits of a model output (a tensor, or the first tensor of a tuple/namedtuple)."""
    if isinstance(out, torch.Tensor):
        return out
    for item in out:
        if isinstance(item, torch.Tensor):
            return item
    raise TypeError(f"model output {type(out).__name__} holds no tensor")


def output_error(out: Any, ref: Any, dtype_name: str) -> dict[str, Any]:
    """``max_abs_err``, ``max_rel_err`` and ``output_ok`` of ``out`` against ``ref``."""
    a = first_tensor(out).detach().float()
    r = first_tensor(ref).detach().float()
    abs_err = float((a - r).abs().max())
    scale = float(r.abs().max())
    rel = abs_err / scale if scale > 0 else (0.0 if abs_err == 0 else float("inf"))
    finite = bool(torch.isfinite(a).all())
    return {
        "max_abs_err": abs_err,
        "max_rel_err": rel,
        "output_ok": finite and rel <= TOLERANCE[dtype_name],
    }


class OutputReference:
    """The eager float32 model of the same weights, kept on disk between checks (in
    ``folder``, the worker's own scratch folder, else the temp folder): in memory, the copy
    would count in a CPU cell's peak memory, which is measured above a baseline taken
    before the model exists."""

    def __init__(
        self, build: Callable[[], Any], model: Any, device: str, folder: str | None = None
    ) -> None:
        self._build = build
        self._device = device
        fd, self._path = tempfile.mkstemp(prefix="effbench-ref-", suffix=".pt", dir=folder)
        os.close(fd)
        torch.save(model.state_dict(), self._path)

    def output(self, x: torch.Tensor) -> Any:
        model = self._build()
        model.load_state_dict(torch.load(self._path, map_location="cpu"))
        model = model.to(device=self._device, dtype=torch.float32).eval()
        with torch.inference_mode():
            out = model(x.to(device=self._device, dtype=torch.float32))
        del model
        return out

    def close(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
