"""Device discovery, synchronisation and the environment record."""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from bench import allocators
from bench.errors import InvalidOption
from bench.plan import DTYPES, Inventory

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    return _TORCH_DTYPES[name]


def _dtype_runs(device: str, dtype: torch.dtype) -> bool:
    """Whether a small conv + linear forward runs in ``dtype`` on ``device``."""
    try:
        with torch.inference_mode():
            x = torch.ones(1, 3, 8, 8, device=device, dtype=dtype)
            w = torch.ones(4, 3, 3, 3, device=device, dtype=dtype)
            y = torch.nn.functional.conv2d(x, w).flatten(1)
            torch.nn.functional.linear(y, torch.ones(2, y.shape[1], device=device, dtype=dtype))
        return True
    except (RuntimeError, TypeError, NotImplementedError):
        return False


def _present() -> list[str]:
    """The devices torch sees here, ``cpu`` first (asking makes no CUDA context)."""
    candidates = ["cpu"]
    if torch.cuda.is_available():
        candidates += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        candidates.append("mps")
    return candidates


def has_accelerator() -> bool:
    """Whether a CUDA GPU or an MPS device is present (asking makes no CUDA context)."""
    return len(_present()) > 1


def discover() -> Inventory:
    """Devices present here and the dtypes each runs, with the default thread count and the
    ``malloc:`` configuration parts this machine can run."""
    devices: dict[str, frozenset[str]] = {}
    for dev in _present():
        devices[dev] = frozenset(d for d in DTYPES if _dtype_runs(dev, _TORCH_DTYPES[d]))
    return Inventory(devices, default_threads(), allocators.available())


def default_threads() -> int:
    """Threads a CPU measurement uses by default: the cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    if device == "mps":
        return f"Apple MPS ({platform.machine()})"
    return cpu_model()


def use_device(device: str, tf32: bool = False) -> None:
    """Make ``device`` the one this process measures on, under the sweep's conditions: on
    CUDA it becomes the current device, cuDNN picks its fastest kernels (``benchmark``),
    and TF32 is allowed in matrix products and convolutions only with ``tf32``
    (``--tf32``). Nothing to do elsewhere."""
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def synchronizer(device: str) -> Callable[[], None]:
    """A function that waits for queued work on ``device`` to finish."""
    if device.startswith("cuda"):
        dev = torch.device(device)
        return lambda: torch.cuda.synchronize(dev)
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit(path: Path | None = None) -> str | None:
    """The suite's git commit (with ``-dirty`` when the tree has changes), if known."""
    where = path or Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return sha + ("-dirty" if dirty else "")


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    name: str
    total_memory_bytes: int
    capability: str


@dataclass(frozen=True, slots=True)
class Environment:
    """Where a run happened: enough to decide whether two runs are comparable."""

    hostname: str
    platform: str
    python_version: str
    torch_version: str
    torchvision_version: str
    cuda_version: str | None
    cudnn_version: int | None
    nvidia_driver: str | None
    cpu_model: str
    cpu_count: int | None
    default_threads: int
    gpus: tuple[GpuInfo, ...] = field(default=())
    devices: dict[str, list[str]] = field(default_factory=dict)
    effbench_commit: str | None = None
    mkldnn: bool = False
    python_executable: str | None = None  # the interpreter the workers ran (sys.executable)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _nvidia_driver() -> str | None:
    from bench.probes.nvml import driver_version

    return driver_version()


def _torchvision_version() -> str:
    """``torchvision.__version__`` without importing torchvision (1.1 s) where nothing else
    has: the constant its ``version.py`` assigns (``0.29.1+cu130``; the distribution's
    metadata says ``0.29.1``), else the metadata's."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return str(module.__version__)
    found = importlib.util.find_spec("torchvision")
    for folder in (found and found.submodule_search_locations) or ():
        with contextlib.suppress(OSError, SyntaxError):
            for node in ast.parse((Path(folder) / "version.py").read_text()).body:
                if (
                    isinstance(node, ast.Assign)
                    and [getattr(t, "id", None) for t in node.targets] == ["__version__"]
                    and isinstance(node.value, ast.Constant)
                ):
                    return str(node.value.value)
    return metadata.version("torchvision")


def environment(inventory: Inventory | None = None) -> Environment:
    inv = inventory or discover()
    gpus: tuple[GpuInfo, ...] = ()
    if torch.cuda.is_available():
        gpus = tuple(
            GpuInfo(
                index=i,
                name=torch.cuda.get_device_name(i),
                total_memory_bytes=torch.cuda.get_device_properties(i).total_memory,
                capability="{}.{}".format(*torch.cuda.get_device_capability(i)),
            )
            for i in range(torch.cuda.device_count())
        )
    return Environment(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python_version=platform.python_version(),
        torch_version=torch.__version__,
        torchvision_version=_torchvision_version(),
        cuda_version=torch.version.cuda,
        cudnn_version=torch.backends.cudnn.version() if torch.cuda.is_available() else None,
        nvidia_driver=_nvidia_driver() if gpus else None,
        cpu_model=cpu_model(),
        cpu_count=os.cpu_count(),
        default_threads=inv.default_threads,
        gpus=gpus,
        devices={d: sorted(dts) for d, dts in inv.devices.items()},
        effbench_commit=git_commit(),
        mkldnn=torch.backends.mkldnn.is_available(),
        python_executable=sys.executable,
    )


PROBE_TIMEOUT_S = 60.0  # `python -m bench env` of another interpreter (imports torch)


def _run_in_own_group(
    cmd: list[str], env: Mapping[str, str], cwd: str, timeout_s: float
) -> subprocess.CompletedProcess[str]:
    """``cmd``'s exit code and output, in a process group of its own; past ``timeout_s``
    the whole group is killed (the command's children too) and ``TimeoutExpired`` raised."""
    import signal

    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except BaseException:  # the timeout, or a signal: nothing it started outlives it
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def interpreter_environment(python: str, env: Mapping[str, str]) -> dict[str, Any]:
    """The environment record of another interpreter (an arm's ``--variant NAME:python=``):
    ``python -m bench env --format json`` run as its workers run (variables ``env`` added to
    this process's, in a neutral folder; see :class:`bench.executor.LocalExecutor`), so that
    the record names the torch, torchvision and effbench commit its workers import. Raises
    :class:`InvalidOption` with the interpreter's last words when it cannot run effbench."""
    try:
        proc = _run_in_own_group(
            [python, "-m", "bench", "env", "--format", "json"],
            env={**os.environ, **env},
            cwd=tempfile.gettempdir(),
            timeout_s=PROBE_TIMEOUT_S,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise InvalidOption(f"{python} cannot run: {e}") from e
    try:
        record = json.loads(proc.stdout) if proc.returncode == 0 else None
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise InvalidOption(
            f"{python} cannot run effbench ({last}); install effbench in that environment "
            "(pip install -e CHECKOUT) or put it on the arm's PYTHONPATH"
        )
    record.pop("power_sources", None)  # `env`'s report on power sensors, not the record
    record["python_executable"] = python  # as given: a virtualenv's link, not its target
    return record
