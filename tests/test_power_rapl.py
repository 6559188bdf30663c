"""The RAPL power backend on a fake powercap tree (``$EFFBENCH_RAPL_ROOT``), including a
real CPU sweep whose counters a background writer advances at a known rate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FAST, ROOT, effbench

from bench import load_results
from bench.probes import rapl
from bench.probes.power import NullPowerMonitor, open_monitor

# zone folder -> (name, watts written, max_energy_range_uj). The package counter wraps
# every 45e6 µJ / 30 W = 1.5 s, longer than a 1-s window (a window holding more than one
# full range could not be resolved by any reader); core and psys must not be counted (core
# lies inside the package, psys overlaps it): a sum with them would be 60 or 160 W, not 40.
PACKAGE = "intel-rapl:0"
ZONES = {
    PACKAGE: ("package-0", 30.0, 45_000_000),
    "intel-rapl:0/intel-rapl:0:0": ("dram", 10.0, 65_712_999_613),
    "intel-rapl:0/intel-rapl:0:1": ("core", 20.0, 65_712_999_613),
    "intel-rapl:1": ("psys", 100.0, 65_712_999_613),
}
EXPECTED_W = 40.0


def make_tree(root: Path, values: dict[str, int] | None = None) -> Path:
    (root / "intel-rapl").mkdir(parents=True)  # the control-type folder: no counter
    (root / "intel-rapl" / "enabled").write_text("1\n")
    for rel, (name, _w, max_uj) in ZONES.items():
        d = root / rel
        d.mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "max_energy_range_uj").write_text(f"{max_uj}\n")
        (d / "energy_uj").write_text(f"{(values or {}).get(rel, 0)}\n")
        if "/" in rel:  # sub-zones are also linked at the top level, as in sysfs
            (root / Path(rel).name).symlink_to(d, target_is_directory=True)
    return root


def set_counter(root: Path, rel: str, value: int) -> None:
    tmp = root / rel / ".energy_uj.tmp"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, root / rel / "energy_uj")


class Writer(threading.Thread):
    """Advances every zone's counter at its rate (µJ = W x 1e6 x s), wrapping at its range,
    about once a millisecond; each write is atomic (rename). ``wrap_in(s)`` shifts the
    package counter's phase so that it wraps ``s`` seconds from now."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.halt = threading.Event()
        self.wraps = 0
        self.t0 = time.monotonic()
        self.phase_uj = 0.0

    def wrap_in(self, seconds: float) -> None:
        _n, watts, max_uj = ZONES[PACKAGE]
        self.phase_uj = -watts * 1e6 * (time.monotonic() + seconds - self.t0) % max_uj

    def run(self) -> None:
        last = {rel: 0 for rel in ZONES}
        while not self.halt.is_set():
            dt = time.monotonic() - self.t0
            for rel, (_n, watts, max_uj) in ZONES.items():
                phase = self.phase_uj if rel == PACKAGE else 0.0
                value = int(watts * 1e6 * dt + phase) % max_uj
                if value < last[rel]:
                    self.wraps += rel == PACKAGE
                last[rel] = value
                set_counter(self.root, rel, value)
            time.sleep(0.001)


@pytest.fixture
def writer(tmp_path: Path) -> Iterator[Writer]:
    w = Writer(make_tree(tmp_path / "powercap"))
    w.start()
    yield w
    w.halt.set()
    w.join()


class FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_counter_difference_handles_wrap_around() -> None:
    assert rapl.counter_delta_uj(1_000, 251_000, 27_000_000) == 250_000
    assert rapl.counter_delta_uj(26_900_000, 150_000, 27_000_000) == 250_000


def test_zones_are_package_and_dram_once_each(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    zones = rapl.find_zones(root)
    assert [z.name for z in zones] == ["package-0", "dram"]
    assert [z.max_energy_range_uj for z in zones] == [45_000_000, 65_712_999_613]


def test_window_energy_with_a_wrap_from_counter_files(tmp_path: Path) -> None:
    root = make_tree(tmp_path, {PACKAGE: 44_000_000, "intel-rapl:0/intel-rapl:0:0": 5})
    clock = FakeClock()
    mon = rapl.RaplMonitor(rapl.find_zones(root), clock=clock)
    mon.begin_window()
    # package: 44.0e6 -> wrap at 45e6 -> 4.0e6 (5 J); dram: 5 -> 2_000_005 (2 J); over 0.5 s
    set_counter(root, PACKAGE, 4_000_000)
    set_counter(root, "intel-rapl:0/intel-rapl:0:0", 2_000_005)
    clock.t += 0.5
    r = mon.end_window()
    assert r.source == "rapl:package-0+dram"
    assert r.energy_j == pytest.approx(7.0) and r.power_w_mean == pytest.approx(14.0)
    assert r.duration_s == pytest.approx(0.5)


def test_short_or_unmoved_windows_are_flagged(tmp_path: Path) -> None:
    root = make_tree(tmp_path)
    clock = FakeClock()
    mon = rapl.RaplMonitor(rapl.find_zones(root), clock=clock)
    mon.begin_window()
    clock.t += 0.5
    still = mon.end_window()
    assert still.energy_j is None and "counter did not advance" in still.source
    mon.begin_window()
    set_counter(root, PACKAGE, 1000)
    clock.t += 0.01
    short = mon.end_window()
    assert short.energy_j is None and "window 0.010 s" in short.source


def test_unreadable_counters_give_a_null_monitor_that_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_tree(tmp_path)
    real = rapl._read_text

    def read(path: Path) -> str:
        if path.name == "energy_uj":  # as for a non-root user since Linux 5.10
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(rapl, "_read_text", read)
    mon = rapl.open_rapl_monitor(root)
    assert isinstance(mon, NullPowerMonitor)
    assert mon.source == "unavailable: RAPL not readable"
    assert "permission denied" in (mon.note or "") and "energy_uj" in (mon.note or "")


def test_missing_root_gives_a_null_monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EFFBENCH_RAPL_ROOT", str(tmp_path / "absent"))
    mon = open_monitor("cpu")
    assert mon.source == "unavailable: RAPL not readable"
    assert str(tmp_path / "absent") in (mon.note or "")


def test_idle_power_survives_several_wraps(writer: Writer) -> None:
    mon = rapl.open_rapl_monitor(writer.root)
    wraps = writer.wraps
    assert mon.idle_power_w(3.2) == pytest.approx(EXPECTED_W, rel=0.05)
    assert writer.wraps - wraps >= 2


def test_cpu_sweep_records_the_written_power(writer: Writer, out_dir: Path) -> None:
    env = {**os.environ, "EFFBENCH_RAPL_ROOT": str(writer.root)}
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1", "--threads", "1"]
    args += ["--min-time", "1", "--max-time", "1", "--warmup-iters", "1", "--warmup-time", "0"]
    args += ["--out", str(out_dir), "--run-id", "rapl"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    stderr, wraps_at_start = [], None
    for line in proc.stderr:
        stderr.append(line)
        if "bs=1" in line:
            # The cell has started: warm-up (one tiny forward) comes first, then a timed
            # window of at least 1 s. A wrap 0.6 s from now falls inside that window.
            writer.wrap_in(0.6)
            wraps_at_start = writer.wraps
    assert proc.wait(timeout=300) == 0, "".join(stderr)
    assert wraps_at_start is not None and writer.wraps > wraps_at_start
    row = load_results([out_dir / "rapl"]).iloc[0]
    assert row["status"] == "ok"
    assert row["power_source"] == "rapl:package-0+dram"
    assert row["power_w_mean"] == pytest.approx(EXPECTED_W, rel=0.05)
    assert row["power_w_idle"] == pytest.approx(EXPECTED_W, rel=0.05)
    # energy per forward x forwards / timed seconds: the same power from the other columns
    assert row["energy_j"] * row["n_samples"] / row["timed_s"] == pytest.approx(
        EXPECTED_W, rel=0.05
    )
    assert row["energy_per_image_j"] == row["energy_j"]
    assert row["timed_s"] < 1.4  # the window held less than one package range (1.5 s)
    assert any("idle power of cpu over 3 s: " in ln for ln in stderr)


def test_sweep_without_rapl_leaves_power_empty_with_one_note(tmp_path: Path, out_dir: Path) -> None:
    env = {**os.environ, "EFFBENCH_RAPL_ROOT": str(tmp_path / "hidden")}
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", "--repeats", "2", *FAST]
    r = effbench([*args, "--out", str(out_dir), "--run-id", "norapl"], env=env)
    assert r.returncode == 0, r.stderr
    df = load_results([out_dir / "norapl"])
    assert len(df) == 4 and set(df["status"]) == {"ok"}
    assert set(df["power_source"]) == {"unavailable: RAPL not readable"}
    for col in ("power_w_mean", "power_w_idle", "energy_j", "energy_per_image_j"):
        assert df[col].isna().all(), col
    notes = [ln for ln in r.stderr.splitlines() if "power not measured" in ln]
    assert notes == [
        f"effbench: power not measured on cpu: unavailable: RAPL not readable: "
        f"{tmp_path / 'hidden'} does not exist (containers often hide it); "
        "set $EFFBENCH_RAPL_ROOT to read another"
    ]


def test_env_reports_power_sources(writer: Writer) -> None:
    env = {**os.environ, "EFFBENCH_RAPL_ROOT": str(writer.root)}
    r = effbench(["env", "--format", "json"], env=env)
    assert r.returncode == 0, r.stderr
    sources = json.loads(r.stdout)["power_sources"]
    assert sources["cpu"] == "rapl:package-0+dram (windows >= 0.1 s)"
    # no GPU: NVML's absence is explained; with one, each cuda:N names its method
    assert any(k.startswith("cuda") for k in sources)
