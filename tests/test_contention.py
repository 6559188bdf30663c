"""The contention evidence: /proc read through bench.host against a hand-written /proc,
the probe's arithmetic through a fake reader, the GPU's other processes through the fake
NVML, the pre-flight check through scripted readings, and real load from bench.loadgen."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import alive

from bench.host import HostTimes, HostUnreadable, OwnTimes, ProcReader, cpu_governors
from bench.loadgen import CpuLoad
from bench.preflight import HostCheck, check_host, wait_for_quiet
from bench.probes.base import Window
from bench.probes.contention import ContentionWindow
from bench.quality import OTHERS_CORES_LIMIT

STAT = """cpu  1000 10 300 50000 20 5 5 40 0 0
cpu0 600 10 200 25000 10 3 2 30 0 0
cpu1 400 0 100 25000 10 2 3 10 0 0
intr 12345
procs_running 3
procs_blocked 0
"""


def _fake_proc(root: Path, stat: str = STAT) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "stat").write_text(stat)
    (root / "loadavg").write_text("1.50 0.75 0.25 3/120 4242\n")
    for pid, comm, ut, st in ((101, "busy worker (x)", 250, 50), (102, "idle", 1, 1)):
        (root / str(pid)).mkdir()
        fields = ["S", "1"] + ["0"] * 9 + [str(ut), str(st)] + ["0"] * 10
        (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {' '.join(fields)}\n")
    task = root / "self" / "task"
    for tid, wait in ((1, 2_000_000_000), (2, 500_000_000)):
        (task / str(tid)).mkdir(parents=True)
        (task / str(tid) / "schedstat").write_text(f"999 {wait} 7\n")
    return root


def test_proc_reader_sums_the_cpu_lines_it_is_asked_for(tmp_path: Path) -> None:
    r = ProcReader(_fake_proc(tmp_path / "proc"))
    tick = r.tick_s
    every = r.host()
    assert every.busy_s == pytest.approx((1000 + 10 + 300 + 5 + 5) * tick)
    assert every.steal_s == pytest.approx(40 * tick)
    assert every.total_s == pytest.approx((1000 + 10 + 300 + 50000 + 20 + 5 + 5 + 40) * tick)
    assert every.runnable == 3
    one = r.host([1])
    assert one.busy_s == pytest.approx((400 + 100 + 2 + 3) * tick)
    assert one.steal_s == pytest.approx(10 * tick)
    with pytest.raises(HostUnreadable):
        r.host([7])  # no cpu7 line
    assert r.run_wait_s("self") == pytest.approx(2.5)
    assert r.loadavg() == (1.5, 0.75, 0.25)
    procs = r.process_cpu_s()
    assert procs[101] == ("busy worker (x)", pytest.approx(300 * tick))
    assert cpu_governors(tmp_path / "no-sys") == ()


def test_proc_reader_without_proc_says_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(HostUnreadable):
        ProcReader(tmp_path / "nothing").host()


class _Scripted:
    """A reader that returns one scripted (host, own) pair per read."""

    tick_s = 0.01

    def __init__(self, hosts: list[HostTimes], owns: list[OwnTimes]) -> None:
        self.hosts, self.owns = hosts, owns

    def host(self, cpus: object = ()) -> HostTimes:
        return self.hosts.pop(0)

    def own(self) -> OwnTimes:
        return self.owns.pop(0)


def test_the_probe_turns_two_readings_into_shares_and_cores() -> None:
    # a 2-second window on 2 CPUs: the worker (2 threads) got 3.0 s of CPU and waited 0.8 s;
    # the CPUs were busy 3.9 s in all, 0.05 s stolen out of 4 s
    hosts = [HostTimes(100.0, 1.0, 1000.0, 2), HostTimes(103.9, 1.05, 1004.0, 5)]
    owns = [OwnTimes(10.0, 1.0, 50), OwnTimes(13.0, 1.8, 350)]
    clock = iter([0.0, 2.0]).__next__
    probe = ContentionWindow(_Scripted(hosts, owns), threads=2, cpus=(0, 1), clock=clock)
    probe.begin()
    got = probe.end(Window(1, (1.0,), 2.0, True))
    assert got["cpu_share"] == pytest.approx(3.0 / (2.0 * 2))
    assert got["run_wait_share"] == pytest.approx(0.8 / (2.0 * 2))
    # others: (3.9 - 3.0 - 2 ticks x 2 CPUs) / 2 s
    assert got["others_cpu_cores"] == pytest.approx((0.9 - 0.04) / 2.0)
    assert got["steal_share"] == pytest.approx(0.05 / 4.0)
    assert got["involuntary_switches"] == 300
    assert (got["host_runnable_begin"], got["host_runnable_end"]) == (2, 5)
    assert got["gpu_other_processes"] is None


def test_a_probe_that_cannot_read_proc_says_why_in_its_note() -> None:
    class Broken(_Scripted):
        def host(self, cpus: object = ()) -> HostTimes:
            raise HostUnreadable("cannot read /proc/stat: no such file")

    probe = ContentionWindow(Broken([], []), threads=1, cpus=())
    probe.begin()  # must not raise: a probe never takes the cell down
    with pytest.raises(HostUnreadable, match="no such file"):
        probe.end(Window(1, (1.0,), 1.0, True))


def test_the_gpu_processes_other_than_this_one_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    from fakes import fake_pynvml

    from bench.probes.gpu_processes import open_gpu_processes

    fake_pynvml.configure(processes=(os.getpid(), 4242, 4343))
    counter = open_gpu_processes("cuda:0", module="fakes.fake_pynvml", uuid_of=lambda i: None)
    assert counter is not None and counter.others() == 2
    counter.close()
    # inside a PID namespace this process is listed under a PID we cannot recognise
    fake_pynvml.configure(processes=(77, 4242))
    counter = open_gpu_processes("cuda:0", module="fakes.fake_pynvml",
                                 uuid_of=lambda i: None, own_pid=12)  # fmt: skip
    assert counter is not None and counter.others() == 1
    counter.close()
    fake_pynvml.configure(library=False)
    assert open_gpu_processes("cuda:0", module="fakes.fake_pynvml") is None
    fake_pynvml.configure()


def _stat(proc: Path, pid: int, ppid: int, name: str = "python3") -> None:
    (proc / str(pid)).mkdir(parents=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560\n")


def test_the_runs_own_processes_on_the_gpu_are_not_counted_as_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The H200's first run counted one other process in every cell: a PID of its own
    namespace, not descended from the worker. The runner and the fork server between it and
    the worker (which may hold an idle context) and the worker's sampler are this run's own;
    a process the runner did not start is another's, however its name reads."""
    from fakes import fake_pynvml

    from bench.probes.gpu_processes import (
        RUNNER_PID_ENV,
        ancestors_to,
        in_process_tree,
        open_gpu_processes,
    )

    proc = tmp_path / "proc"
    _stat(proc, 100, 1, "bash")  # a shell
    _stat(proc, 200, 100, "python3 -m bench")  # the runner
    _stat(proc, 210, 200)  # the fork server
    _stat(proc, 300, 210)  # this worker
    _stat(proc, 310, 300, "python3 (sampler)")  # its spawned NVML sampler
    _stat(proc, 400, 100, "python3) S 200 (x")  # another job, its name made to mislead
    assert in_process_tree(310, {300}, proc) is True
    assert in_process_tree(400, {300}, proc) is False
    assert in_process_tree(999, {300}, proc) is None  # another PID namespace
    assert ancestors_to(300, 200, proc) == {210, 200}
    assert ancestors_to(300, None, proc) == {210}  # runner unknown: the parent only

    def count(*pids: int) -> tuple[int | None, str]:
        fake_pynvml.configure(processes=pids)
        counter = open_gpu_processes(
            "cuda:0", module="fakes.fake_pynvml", uuid_of=lambda i: None, own_pid=300, proc=proc
        )
        assert counter is not None
        try:
            return counter.others(), counter.seen
        finally:
            counter.close()

    try:
        monkeypatch.setenv(RUNNER_PID_ENV, "200")
        assert count(300, 200, 210, 310) == (0, "4 listed, 4 of this run")
        assert count(300, 200, 400)[0] == 1
        # listed under host PIDs: one unresolved process is this worker, the rest are others
        assert count(9001, 9002) == (1, "2 listed, 0 of this run, 2 outside this PID namespace")
        assert count(9001)[0] == 0
        # a thread of this worker listed by its thread ID ("Tgid" names its process)
        (proc / "305").mkdir()
        (proc / "305" / "stat").write_text("305 (python3) S 210 300 300 0 -1 4194560\n")
        (proc / "305" / "status").write_text("Name:\tpython3\nTgid:\t300\nPid:\t305\n")
        assert count(300, 305) == (0, "2 listed, 2 of this run")
        monkeypatch.delenv(RUNNER_PID_ENV)
        assert count(300, 200)[0] == 1  # a runner that does not say so is not known
    finally:
        fake_pynvml.configure()


def test_every_worker_is_told_which_process_is_its_runner() -> None:
    """The walk above needs the runner's PID: a new worker process gets it in its
    environment; a fork server's workers inherit it from the server's."""
    from bench.executor import LocalExecutor
    from bench.probes.gpu_processes import RUNNER_PID_ENV
    from bench.worker import Group, Task, Timing

    task = Task("r", Group("m", "cpu", "float32", 8, 3, 1, 0, (1,)), Timing())
    assert LocalExecutor()._env(task)[RUNNER_PID_ENV] == str(os.getpid())


def _moving(proc: Path, gained_s: float) -> ProcReader:
    """A reader of the fake /proc under which, between the two readings, the CPUs gain 150
    busy ticks (1.5 s of CPU in 1 s) and process 101 gains ``gained_s`` of them."""

    class Moving(ProcReader):
        reads = 0

        def host(self, cpus: object = ()) -> HostTimes:
            h = super().host()
            return h if self.reads == 0 else HostTimes(h.busy_s + 1.5, h.steal_s, h.total_s + 2, 4)

        def own(self) -> OwnTimes:
            return OwnTimes(0.0, 0.0, 0)

        def process_cpu_s(self) -> dict[int, tuple[str, float]]:
            p = super().process_cpu_s()
            if self.reads:
                p[101] = (p[101][0], p[101][1] + gained_s)
            self.reads += 1
            return p

    return Moving(proc)


def test_preflight_names_the_busy_processes_and_what_to_do(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "proc")
    clock = iter([0.0, 1.0]).__next__
    check = check_host(_moving(proc, 1.2), seconds=1.0, cpus=(0, 1), sleep=lambda s: None,
                       clock=clock, governors=lambda: ("powersave",))  # fmt: skip
    assert check.busy and check.others_cores == pytest.approx(1.5)
    assert check.heavy == ((101, "busy worker (x)", pytest.approx(1.2)),)
    text = check.describe()
    assert "busy worker (x) (pid 101) 1.20" in text and "1.50 of 2 cores" in text
    advice = check.advice(threads=2)
    assert "--threads 1" in advice and "taskset" in advice and "powersave" in advice


def test_preflight_leaves_out_the_runs_own_fork_server(tmp_path: Path) -> None:
    """1.5 s of CPU in 1 s, 1.4 s of it process 101's: another program's, the host is
    busy; this run's fork server (``ours``), importing torch while the check runs, it is
    not (0.1 cores of others' load)."""
    proc = _fake_proc(tmp_path / "proc")

    def check(ours: tuple[int, ...]) -> HostCheck:
        clock = iter([0.0, 1.0]).__next__
        return check_host(_moving(proc, 1.4), seconds=1.0, cpus=(0, 1), sleep=lambda s: None,
                          clock=clock, governors=lambda: (), ours=ours)  # fmt: skip

    theirs, mine = check(()), check((101,))
    assert theirs.busy and theirs.others_cores == pytest.approx(1.5) and theirs.heavy
    assert mine.others_cores == pytest.approx(0.1) and mine.heavy == ()
    assert not mine.busy and mine.others_cores < OTHERS_CORES_LIMIT


def test_waiting_for_quiet_stops_at_the_first_quiet_check_or_the_bound() -> None:
    def made(busy: bool) -> HostCheck:
        return HostCheck(0.5, 2, 1.0 if busy else 0.0, (), None, (), busy)

    checks = iter([made(True), made(True), made(False), made(True)])
    t = iter(range(100)).__next__
    assert wait_for_quiet(30, check=lambda: next(checks), clock=t).busy is False
    busy_forever = wait_for_quiet(3, check=lambda: made(True), clock=iter(range(100)).__next__)
    assert busy_forever.busy  # gave up at the bound, and says the host is still busy


@pytest.mark.serial  # real load: kept out of the other tests' way
def test_real_load_is_seen_by_the_preflight_and_by_the_probe() -> None:
    cores = len(os.sched_getaffinity(0))
    with CpuLoad(cores + 1, max_s=10) as load:
        time.sleep(0.3)
        check, spinners = check_host(seconds=0.5), set(load.pids)
        probe = ContentionWindow(ProcReader(), threads=cores, cpus=sorted(os.sched_getaffinity(0)))
        probe.begin()
        deadline = time.monotonic() + 1.0
        x = 0
        while time.monotonic() < deadline:  # this process wants every core it asked for
            x += 1
        got = probe.end(Window(1, (1.0,), 1.0, True))
    assert check.busy and check.others_cores is not None and check.others_cores > 0.5 * cores
    # the load is this process's children, not the run's: counted, and named as well
    assert check.heavy and {pid for pid, _, _ in check.heavy} <= spinners
    assert got["others_cpu_cores"] > 0.5 * cores
    # one spinning thread asked for `cores` threads' worth: it waited for a CPU a good part
    assert got["run_wait_share"] is not None and got["run_wait_share"] > 0.05 / cores


def test_the_load_ends_by_its_own_deadline() -> None:
    load = CpuLoad(1, max_s=0.5).start()
    (pid,) = load.pids
    time.sleep(1.5)
    assert not alive(pid)
    load.stop()


def test_the_load_outlives_the_thread_that_started_it_and_not_its_process() -> None:
    """Mostly asleep (1 ms on, 5 s off). Started from a thread that then ends, the load goes
    on (the kernel's parent-death signal, which the spinners used, fires when the *thread*
    ends); its process SIGKILLed, the load ends within a poll."""
    import threading

    load = CpuLoad(1, max_s=20, on_s=0.001, off_s=5)
    starter = threading.Thread(target=load.start)
    starter.start()
    starter.join()
    try:
        time.sleep(0.5)
        assert alive(load.pids[0]), "the load ended with the thread that started it"
    finally:
        load.stop()
    code = (
        "import time\nfrom bench.loadgen import CpuLoad\n"
        "load = CpuLoad(1, max_s=20, on_s=0.001, off_s=5).start()\n"
        "print(load.pids[0], flush=True)\ntime.sleep(30)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    spinner = int(proc.stdout.readline())
    proc.kill()
    proc.wait(10)
    deadline = time.monotonic() + 5
    while alive(spinner) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(spinner), "the load outlived the process that started it"
