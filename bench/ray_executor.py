"""The Ray executor: each worker group is a Ray task that holds its device exclusively and
streams the worker's messages back to the driver, which stays the only writer of the run
folder (docs/scale-out.md). Ray is an optional extra: ``pip install 'effbench[ray]'``.

- A CUDA group asks for ``num_gpus=1``: Ray gives the task one GPU of some node (and sets
  ``CUDA_VISIBLE_DEVICES``), so groups spread over every GPU of the cluster, one each.
- A CPU group asks for one unit of the custom resource :data:`CPU_NODE_RESOURCE`, of which
  each node declares exactly one (``ray start --resources='{"effbench_cpu_node": 1}'``; the
  local instance declares it itself): two CPU measurements never share a machine.
- Inside the task a fresh worker process measures the group, forked from a fork server
  that the Ray worker starts for its first task and keeps while later tasks need the same
  environment and imports (torch imported there, as the local fork executor does, so a
  group does not pay the interpreter's 3-5 s of imports); its messages are yielded one by
  one (a streaming generator).
- A cell that overruns ``--cell-timeout`` cancels the task (``force=True`` kills its Ray
  worker, and with it the measuring process); a Ray worker or node that dies ends the task
  with an error, which becomes a ``crashed`` row. Tasks are never retried: a retry would
  measure a cell twice.

Not run on a real multi-node cluster or a GPU yet: tested on a local instance, inside a
network namespace that has only the loopback interface.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from bench.errors import Interrupted, InvalidOption
from bench.executor import Capabilities, Cluster, Message, Received, WorkerExit, watch
from bench.plan import Inventory
from bench.status import CRASHED
from bench.worker import Task, import_network

CPU_NODE_RESOURCE = "effbench_cpu_node"
POLL_S = 0.5  # longest wait on Ray between two chances to handle a signal
INSTALL_HINT = "pip install 'effbench[ray]'"


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise InvalidOption(f"--executor ray needs Ray: {INSTALL_HINT}") from e
    return ray


CONNECT_TIMEOUT_ENV = "EFFBENCH_RAY_CONNECT_TIMEOUT_S"
CONNECT_TIMEOUT_S = 30.0  # joining a cluster: longest wait before giving up
# A local instance talks to this machine only: Ray otherwise finds "the node's IP" by
# opening a socket towards 8.8.8.8 (read when Ray is imported, by Ray's own processes too),
# and its dashboard reports usage to Ray's servers.
LOCAL_ONLY_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def connect_timeout_s() -> float:
    """How long joining a cluster may take: ``$EFFBENCH_RAY_CONNECT_TIMEOUT_S`` seconds, or
    :data:`CONNECT_TIMEOUT_S`."""
    text = os.environ.get(CONNECT_TIMEOUT_ENV)
    if text is None:
        return CONNECT_TIMEOUT_S
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= 3600):
        raise InvalidOption(f"${CONNECT_TIMEOUT_ENV}={text!r} must be seconds in (0, 3600]")
    return value


@contextlib.contextmanager
def _local_only() -> Iterator[None]:
    """:data:`LOCAL_ONLY_ENV` set while Ray is imported and its local processes start."""
    saved = {k: os.environ.get(k) for k in LOCAL_ONLY_ENV}
    os.environ.update(LOCAL_ONLY_ENV)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def connect(address: str | None) -> None:
    """Start a local Ray instance (``address`` None) or join a cluster (``auto`` or
    ``HOST:PORT``), which must answer within :func:`connect_timeout_s`. The local instance
    declares one :data:`CPU_NODE_RESOURCE` and uses the loopback address only."""
    kwargs: dict[str, Any] = dict(log_to_driver=False, configure_logging=False)
    ours = _our_signal_handlers()
    try:
        if address is None:  # a local instance is for this machine only
            with _local_only():
                ray = _ray()
                if ray.is_initialized():
                    return
                ray.init(
                    include_dashboard=False,
                    resources={CPU_NODE_RESOURCE: 1},
                    _node_ip_address="127.0.0.1",
                    **kwargs,
                )
        else:
            ray = _ray()
            if ray.is_initialized():
                return
            _check_answers(_bootstrap_address(address), connect_timeout_s())
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        where = "start a local Ray instance" if address is None else f"reach Ray at {address}"
        raise InvalidOption(f"cannot {where}: {e}; see docs/scale-out.md") from e
    finally:
        _take_back_signals(ours)


def _bootstrap_address(address: str) -> str | None:
    """``HOST:PORT`` of the cluster ``address`` names (``auto``: the one Ray would join, as
    Ray finds it; None when that cannot be told, and Ray is left to say so)."""
    address = address.removeprefix("ray://")
    if address != "auto":
        return address
    try:  # a private helper of Ray's: checked, and skipped if it moves
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address(address)
    except Exception:  # Ray's own error comes with ray.init
        return None
    return found if isinstance(found, str) else None


# The client's HTTP/2 connection preface and an empty SETTINGS frame: a gRPC server (Ray's
# GCS, Ray Client) answers with a SETTINGS frame (type 4) of its own.
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


def _check_answers(address: str | None, timeout: float) -> None:
    """Fail within ``timeout`` seconds unless a gRPC server answers at ``HOST:PORT``: Ray
    itself retries for minutes, printing warnings, when nothing (or something else)
    listens there. The gRPC check is skipped under TLS (``$RAY_USE_TLS``)."""
    host, sep, port = (address or "").rpartition(":")
    if not sep or not port.isdigit():
        return
    hint = "check the address and that `ray start --head` runs there (docs/scale-out.md)"
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as conn:
            if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
                return
            conn.settimeout(max(deadline - time.monotonic(), 0.01))
            conn.sendall(_H2_PREFACE)
            head = conn.recv(9)
    except TimeoutError as e:
        raise InvalidOption(
            f"Ray at {address} did not answer within {timeout:g} s (${CONNECT_TIMEOUT_ENV} "
            f"sets the bound); {hint}"
        ) from e
    except OSError as e:
        raise InvalidOption(f"cannot reach Ray at {address}: {e.strerror or e}; {hint}") from e
    if len(head) < 9 or head[3] != 4:
        raise InvalidOption(f"{address} answers, but not as Ray does (gRPC); {hint}")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _our_signal_handlers() -> dict[int, Any]:
    """The Python handlers of the signals that stop a sweep, before Ray is started."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}


def _take_back_signals(ours: Mapping[int, Any]) -> None:
    """Put back the handlers ``ray.init`` replaced: it installs Python SIGTERM handlers of
    its own (the driver's exits; the local node's kills Ray's processes and exits 1) and
    its core worker a C++ one (a stack dump, then an abort). With ours back, SIGTERM stops
    the sweep like Ctrl-C: the session is recorded and the resume hint printed (exit 143);
    Ray's processes go with Ray's own shutdown at exit."""
    for sig, handler in ours.items():
        if handler is not None:  # None: installed outside Python, nothing to put back
            signal.signal(sig, handler)


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
    """This node's environment record, run in a Ray worker, which Ray keeps: where a GPU is
    present its devices are listed in a process forked from that worker's fork server, not
    in the worker (bench.discovery)."""
    from bench import devices
    from bench.discovery import without_context

    env = without_context(devices.environment, f"node {socket.gethostname()}'s").to_dict()
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


def _fork_server(model: str) -> Any:
    """This Ray worker's fork server, made ready for a task of ``model``: torch and the
    registry imported once, workers forked from it (bench.executor keeps one per process).
    Ready per task, not once: Ray sets each task's ``CUDA_VISIBLE_DEVICES`` in this
    process before it runs the task, and a server started for an earlier task would give
    its workers that task's GPU; the executor replaces a server whose environment or
    imports differ from what the task needs. ``model`` is looked up first, so torchvision's
    zoo is imported, here and in the server, only once one of its networks comes."""
    from bench.executor import ForkServerExecutor

    import_network(model)
    server = ForkServerExecutor()
    server.prepare()
    return server


def _group_stream(task_json: str, cell_timeout_s: float) -> Iterator[Message]:
    """Runs on a Ray worker: measure one group in a fresh worker process forked from this
    Ray worker's fork server, and yield its messages, then ``{"event": "exit"}`` with how it
    ended. A cancelled task's Ray worker dies; its fork server sees the keep-alive pipe
    close and exits, and the measuring process dies with it (``PR_SET_PDEATHSIG``)."""
    task = Task.from_json(task_json)
    server = _fork_server(task.group.model)
    messages: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def measure() -> None:
        try:
            out = server.run(task, messages.put, cell_timeout_s)
            messages.put({"event": "exit", "status": out.status, "detail": out.detail})
        except BaseException as e:  # reported to the driver as the group's ending
            messages.put({"event": "exit", "status": CRASHED, "detail": f"{e!r}"[:300]})

    threading.Thread(target=measure, name="effbench-group", daemon=True).start()
    while True:
        msg = messages.get()
        if msg.get("event") == "exit":
            yield {**msg, "hostname": socket.gethostname()}
            return
        yield msg


class RayExecutor:
    """Runs each task as a Ray task (see the module docstring); one at a time per call, so
    several runner threads may call :meth:`run` at once (one per GPU of the cluster). Its
    workers are not on this machine: no ceilings, instruction counts, ``malloc:``,
    ``--parallel``, ``python=`` arms or ping-pong with it."""

    capabilities = Capabilities(
        local=False, parallel=False, interpreters=False, pingpong=False, cluster=True
    )

    def __init__(self, address: str | None = None) -> None:
        connect(address)
        self._ray = _ray()
        self._remote = self._ray.remote(_group_stream)
        self._lock = threading.Lock()
        self._running: set[Any] = set()  # streams in flight (several lanes at once)
        self._cancelled = False

    @classmethod
    def connect(cls, address: str | None) -> Cluster:
        """Connect to Ray (``address``, or a local instance), read every node's environment
        and resolve what the cluster can run, before anything runs."""
        executor = cls(address)
        nodes = node_environments()
        return Cluster(
            executor, cluster_inventory(nodes), nodes, cluster_gpus(nodes), _unknown_device
        )

    def prepare(self) -> None:
        """Nothing to start: connecting (in the constructor) started what Ray needs."""

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

        def receive(wait_s: float) -> Received:
            # short waits: a signal's handler runs only between them (ray.wait blocks in
            # C++), so Ctrl-C stops the sweep within a second
            ready, _ = ray.wait([stream], timeout=min(wait_s, POLL_S))
            if not ready:
                return []
            try:
                msg = ray.get(next(stream))
            except StopIteration:
                return WorkerExit(CRASHED, "the Ray task ended without an exit message")
            except ray.exceptions.RayError as e:
                text = str(e).strip().splitlines()
                return WorkerExit(CRASHED, f"Ray task failed: {text[0] if text else e!r}")
            if msg.get("event") == "exit":
                return WorkerExit(str(msg["status"]), str(msg.get("detail", "")))
            return [msg]

        try:
            end = watch(receive, on_message, lambda: ray.cancel(stream, force=True), cell_timeout_s)
            return end if end is not None else WorkerExit(CRASHED, "no exit message")
        except BaseException as e:  # a signal, or a protocol error: no task outlives it
            ray.cancel(stream, force=True)
            if isinstance(e.__cause__, Interrupted):  # Ray's C++ wait wraps the handler's
                raise e.__cause__ from None  # exception in a SystemError
            raise
        finally:
            with self._lock:
                self._running.discard(stream)


def _unknown_device(device: str) -> str:
    # for rows the runner writes itself (a task that died): the node is not known
    return "unknown (the Ray task ended before reporting)"
