"""The Ray executor: each worker group is a Ray task that holds its device exclusively and
streams the worker's messages back to the driver, which stays the only writer of the run
folder (docs/scale-out.md). Ray is an optional extra: ``pip install 'effbench[ray]'``.

- A CUDA group asks for ``num_gpus=1``: Ray gives the task one GPU of some node (and sets
  ``CUDA_VISIBLE_DEVICES``), so groups spread over every GPU of the cluster, one each.
- A CPU group asks for one unit of the custom resource :data:`CPU_NODE_RESOURCE`, of which
  each node declares exactly one (``ray start --resources='{"effbench_cpu_node": 1}'``; the
  local instance declares it itself): two CPU measurements never share a machine.
- Inside the task a fresh ``python -m bench.worker`` process measures the group (as the
  subprocess executor does), dying with the Ray worker that started it
  (``PR_SET_PDEATHSIG``); its JSON messages are yielded one by one (a streaming generator).
- A cell that overruns ``--cell-timeout`` cancels the task (``force=True`` kills its Ray
  worker, and with it the measuring process); a Ray worker or node that dies ends the task
  with an error, which becomes a ``crashed`` row. Tasks are never retried: a retry would
  measure a cell twice.

Not run on a real multi-node cluster or a GPU yet: tested on a local instance, inside a
network namespace that has only the loopback interface.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bench.errors import InvalidOption
from bench.executor import STARTUP_GRACE_S, Message, WorkerExit, _worker_exit
from bench.plan import Inventory
from bench.worker import Task

CPU_NODE_RESOURCE = "effbench_cpu_node"
INSTALL_HINT = "pip install 'effbench[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise InvalidOption(f"--executor ray needs Ray: {INSTALL_HINT}") from e
    return ray


def connect(address: str | None) -> None:
    """Start a local Ray instance (``address`` None) or join a cluster (``auto`` or
    ``HOST:PORT``). The local instance declares one :data:`CPU_NODE_RESOURCE`."""
    ray = _ray()
    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = dict(log_to_driver=False, configure_logging=False)
    try:
        if address is None:
            ray.init(include_dashboard=False, resources={CPU_NODE_RESOURCE: 1}, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "start a local Ray instance" if address is None else f"reach Ray at {address}"
        raise InvalidOption(f"cannot {where}: {e}; see docs/scale-out.md") from e


def _on_each_node(fn: Callable[[], Any]) -> list[Any]:
    """``fn()`` run once on every alive node of the cluster."""
    ray = _ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(fn)
    refs = [
        remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote()
        for n in ray.nodes()
        if n.get("Alive")
    ]
    return ray.get(refs)


def _node_environment() -> dict[str, Any]:
    from bench import devices

    env = devices.environment().to_dict()
    env["hostname"] = socket.gethostname()
    return env


def node_environments() -> dict[str, dict[str, Any]]:
    """Each node's environment record (CPU, GPUs, driver, versions), by hostname."""
    return {env["hostname"]: env for env in _on_each_node(_node_environment)}


def cluster_inventory(nodes: Mapping[str, Mapping[str, Any]]) -> Inventory:
    """What the cluster can run: ``cpu`` with the dtypes every node runs, and ``cuda`` (any
    GPU of the cluster; Ray picks one per group) with the dtypes every GPU node runs.
    Threads default to the smallest node's cores."""
    cpu_dtypes: set[str] | None = None
    gpu_dtypes: set[str] | None = None
    for env in nodes.values():
        devs = env.get("devices", {})
        cpu_dtypes = (
            set(devs.get("cpu", ()))
            if cpu_dtypes is None
            else cpu_dtypes & set(devs.get("cpu", ()))
        )
        for dev, dts in devs.items():
            if dev.startswith("cuda:"):
                gpu_dtypes = set(dts) if gpu_dtypes is None else gpu_dtypes & set(dts)
    devices: dict[str, frozenset[str]] = {"cpu": frozenset(cpu_dtypes or ())}
    if gpu_dtypes is not None:
        devices["cuda"] = frozenset(gpu_dtypes)
    threads = min((int(env.get("default_threads") or 1) for env in nodes.values()), default=1)
    return Inventory(devices, threads)


def cluster_gpus(nodes: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every GPU the cluster offers: (hostname, index, name), for the manifest."""
    out = []
    for host, env in sorted(nodes.items()):
        for i, gpu in enumerate(env.get("gpus") or ()):
            name = gpu.get("name") if isinstance(gpu, Mapping) else str(gpu)
            out.append({"hostname": host, "index": i, "name": name})
    return out


def _group_stream(task_json: str, env_extra: dict[str, str]) -> Iterator[Message]:
    """Runs on a Ray worker: measure one group in a fresh worker process and yield its
    messages, then ``{"event": "exit"}`` with its exit code and the end of its stderr."""
    env = dict(os.environ)
    env.update(env_extra)
    env["EFFBENCH_PARENT_PID"] = str(os.getpid())
    env["PYTHONUNBUFFERED"] = "1"
    with tempfile.TemporaryFile(mode="w+b") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            start_new_session=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.write(task_json.encode())
            proc.stdin.close()
        for line in proc.stdout:
            if line.strip():
                yield json.loads(line)
        proc.wait()
        err.seek(0)
        yield {
            "event": "exit",
            "code": proc.returncode,
            "stderr": err.read()[-4000:].decode(errors="replace"),
            "hostname": socket.gethostname(),
        }


class RayExecutor:
    """Runs each task as a Ray task (see the module docstring); one at a time per call, so
    several runner threads may call :meth:`run` at once (one per GPU of the cluster)."""

    def __init__(self, address: str | None = None) -> None:
        connect(address)
        self._ray = _ray()
        self._remote = self._ray.remote(_group_stream)
        self._lock = threading.Lock()
        self._running: set[Any] = set()  # streams in flight (several lanes at once)
        self._cancelled = False

    def cancel(self) -> None:
        """Cancel every task in flight and any started later (a signal stopped the sweep)."""
        with self._lock:
            self._cancelled = True
            running = list(self._running)
        for stream in running:
            with contextlib.suppress(Exception):
                self._ray.cancel(stream, force=True)

    def _options(self, task: Task) -> dict[str, Any]:
        opts: dict[str, Any] = dict(num_returns="streaming", max_retries=0, retry_exceptions=False)
        if task.group.device.startswith("cuda"):
            opts.update(num_gpus=1, num_cpus=0)
        else:
            opts.update(num_cpus=0, resources={CPU_NODE_RESOURCE: 1})
        return opts

    def run(
        self, task: Task, on_message: Callable[[Message], None], cell_timeout_s: float
    ) -> WorkerExit:
        ray = self._ray
        threads = str(task.group.threads)
        env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, **task.env}
        stream = self._remote.options(**self._options(task)).remote(task.to_json(), env)
        with self._lock:
            self._running.add(stream)
            if self._cancelled:
                ray.cancel(stream, force=True)
        deadline = time.monotonic() + cell_timeout_s + STARTUP_GRACE_S
        try:
            while True:
                ready, _ = ray.wait([stream], timeout=max(deadline - time.monotonic(), 0))
                if not ready:
                    ray.cancel(stream, force=True)
                    return WorkerExit(
                        "timeout", f"cell exceeded --cell-timeout {cell_timeout_s:g} s"
                    )
                try:
                    msg = ray.get(next(stream))
                except StopIteration:
                    return WorkerExit("crashed", "the Ray task ended without an exit message")
                except ray.exceptions.RayError as e:
                    text = str(e).strip().splitlines()
                    return WorkerExit("crashed", f"Ray task failed: {text[0] if text else e!r}")
                if msg.get("event") == "exit":
                    stderr = str(msg.get("stderr", "")).encode()
                    return _worker_exit(None, int(msg["code"]), stderr)
                if msg.get("event") == "start":
                    deadline = time.monotonic() + cell_timeout_s
                on_message(msg)
        except BaseException:  # a signal, or a protocol error: no task outlives it
            ray.cancel(stream, force=True)
            raise
        finally:
            with self._lock:
                self._running.discard(stream)
