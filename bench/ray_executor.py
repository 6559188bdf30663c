"""The Ray executor: each worker group is a Ray task that holds its device exclusively and
streams the worker's messages back to the driver, which stays the only writer of the run
folder (docs/scale-out.md). Ray is an optional extra: ``pip install 'effbench[ray]'``.

- A CUDA group asks for ``num_gpus=1``: Ray gives the task one GPU of some node (and sets
  ``CUDA_VISIBLE_DEVICES``), so groups spread over every GPU of the cluster, one each.
- A CPU group asks for one unit of the custom resource :data:`CPU_NODE_RESOURCE`, of which
  each node declares exactly one (``ray start --resources='{"effbench_cpu_node": 1}'``; the
  local instance declares it itself): two CPU measurements never share a machine.
- Inside the task a fresh worker process measures the group, forked from a fork server
  that the Ray worker starts once (torch imported there, as the local fork executor does,
  so a group does not pay the interpreter's 3-5 s of imports); its messages are yielded
  one by one (a streaming generator).
- A cell that overruns ``--cell-timeout`` cancels the task (``force=True`` kills its Ray
  worker, and with it the measuring process); a Ray worker or node that dies ends the task
  with an error, which becomes a ``crashed`` row. Tasks are never retried: a retry would
  measure a cell twice.

Not run on a real multi-node cluster or a GPU yet: tested on a local instance, inside a
network namespace that has only the loopback interface.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bench.errors import Interrupted, InvalidOption
from bench.executor import STARTUP_GRACE_S, Message, WorkerExit
from bench.plan import Inventory
from bench.worker import Task

CPU_NODE_RESOURCE = "effbench_cpu_node"
POLL_S = 0.5  # longest wait on Ray between two chances to handle a signal
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
        if address is None:  # a local instance is for this machine only
            ray.init(
                include_dashboard=False,
                resources={CPU_NODE_RESOURCE: 1},
                _node_ip_address="127.0.0.1",
                **kwargs,
            )
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


_FORK_SERVER: Any = None  # per Ray worker process, reused by the tasks it runs


def _fork_server() -> Any:
    """This Ray worker's fork server (torch imported once, workers forked from it)."""
    global _FORK_SERVER
    if _FORK_SERVER is None:
        from multiprocessing import forkserver

        from bench.executor import ForkServerExecutor

        server = ForkServerExecutor()
        try:
            server.prepare()
        except ValueError:  # not the main thread: no signal dispositions to set
            forkserver.ensure_running()
            server._started = True
        _FORK_SERVER = server
    return _FORK_SERVER


def _group_stream(task_json: str, cell_timeout_s: float) -> Iterator[Message]:
    """Runs on a Ray worker: measure one group in a fresh worker process forked from this
    Ray worker's fork server, and yield its messages, then ``{"event": "exit"}`` with how it
    ended. A cancelled task's Ray worker dies; its fork server sees the keep-alive pipe
    close and exits, and the measuring process dies with it (``PR_SET_PDEATHSIG``)."""
    task = Task.from_json(task_json)
    server = _fork_server()
    messages: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def measure() -> None:
        try:
            out = server.run(task, messages.put, cell_timeout_s)
            messages.put({"event": "exit", "status": out.status, "detail": out.detail})
        except BaseException as e:  # reported to the driver as the group's ending
            messages.put({"event": "exit", "status": "crashed", "detail": f"{e!r}"[:300]})

    threading.Thread(target=measure, name="effbench-group", daemon=True).start()
    while True:
        msg = messages.get()
        if msg.get("event") == "exit":
            yield {**msg, "hostname": socket.gethostname()}
            return
        yield msg


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
        remote = self._remote.options(**self._options(task))
        stream = remote.remote(task.to_json(), cell_timeout_s)
        with self._lock:
            self._running.add(stream)
            if self._cancelled:
                ray.cancel(stream, force=True)
        deadline = time.monotonic() + cell_timeout_s + STARTUP_GRACE_S
        try:
            while True:
                # short waits: a signal's handler runs only between them (ray.wait blocks
                # in C++), so Ctrl-C stops the sweep within a second
                left = deadline - time.monotonic()
                ready, _ = ray.wait([stream], timeout=min(max(left, 0), POLL_S))
                if not ready and left > POLL_S:
                    continue
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
                    return WorkerExit(str(msg["status"]), str(msg.get("detail", "")))
                if msg.get("event") == "start":
                    deadline = time.monotonic() + cell_timeout_s
                on_message(msg)
        except BaseException as e:  # a signal, or a protocol error: no task outlives it
            ray.cancel(stream, force=True)
            if isinstance(e.__cause__, Interrupted):  # Ray's C++ wait wraps the handler's
                raise e.__cause__ from None  # exception in a SystemError
            raise
        finally:
            with self._lock:
                self._running.discard(stream)
