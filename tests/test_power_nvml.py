"""The NVML power backend, driven through a fake pynvml at the seam (no GPU needed).

Expected figures are analytic: the fake GPU draws P(t) = mean + amp·sin(2πt/period) W, so
the energy of any window is a closed-form integral (``fake.energy_j``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator

import pytest
from fakes import fake_pynvml as fake

from bench.probes import nvml as nv
from bench.probes.power import NullPowerMonitor

MODULE = "fakes.fake_pynvml"


class FakeClock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ClockSampler:
    """In-process stand-in for the sampler process on a fake clock: at ``stop`` it reads
    the fake NVML (through the real ``read_sample``) every ``every_s`` since ``start``."""

    def __init__(self, clock: FakeClock, method: str | None, every_s: float = 0.02) -> None:
        self.clock, self.method, self.every_s = clock, method, every_s
        self.handle = fake.nvmlDeviceGetHandleByIndex(0)
        self.t_start = 0.0

    def start(self) -> None:
        self.t_start = self.clock.t

    def stop(self) -> list[nv.Sample]:
        now, out = self.clock.t, []
        n = int((now - self.t_start) / self.every_s) + 1
        for i in range(n + 1):
            self.clock.t = min(self.t_start + i * self.every_s, now)
            out.append(nv.read_sample(fake, self.handle, self.method, self.clock))
        self.clock.t = now
        return out

    def close(self) -> None:
        return None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeClock]:
    c = FakeClock(10.0)
    monkeypatch.setattr(fake, "clock", c)
    yield c
    fake.configure()
    fake._initialized = False


def open_fake(clock: FakeClock, every_s: float = 0.02) -> nv.NvmlMonitor:
    def sleep(s: float) -> None:
        clock.t += s

    monitor = nv.open_nvml_monitor(
        "cuda:0",
        module=MODULE,
        uuid_of=lambda i: None,
        sampler_factory=lambda m, k, pm: ClockSampler(clock, pm, every_s),
        clock=clock,
        sleep=sleep,
    )
    assert isinstance(monitor, nv.NvmlMonitor), getattr(monitor, "note", monitor)
    return monitor


def test_counter_difference_is_converted_from_millijoules(clock: FakeClock) -> None:
    fake.configure(mean_w=250.0, counter_period_s=0.1)
    mon = open_fake(clock)
    assert mon.source == "nvml:energy-counter"
    mon.begin_window()
    clock.t = 12.0
    r = mon.end_window()
    # 250 W for 2 s between counter ticks at 10.0 s and 12.0 s: 500 J exactly (mJ rounding).
    assert r.duration_s == pytest.approx(2.0)
    assert r.energy_j == pytest.approx(500.0, abs=2e-3)
    assert r.power_w_mean == pytest.approx(250.0, abs=1e-3)
    assert r.source == "nvml:energy-counter"


def test_counter_reads_are_stale_by_up_to_one_update_period(clock: FakeClock) -> None:
    # Window 10.05 s -> 11.53 s; the counter last moved at 10.0 s and 11.5 s, so it holds
    # 250 W x 1.5 s = 375 J, divided by the 1.48 s measured: the documented quantisation.
    fake.configure(mean_w=250.0, counter_period_s=0.1)
    clock.t = 10.05
    mon = open_fake(clock)
    mon.begin_window()
    clock.t = 11.53
    r = mon.end_window()
    assert r.energy_j == pytest.approx(375.0, abs=2e-3)
    assert r.power_w_mean == pytest.approx(375.0 / 1.48, rel=1e-6)


def test_window_shorter_than_the_counter_can_resolve_is_flagged_not_zero(clock: FakeClock) -> None:
    fake.configure(mean_w=250.0, counter_period_s=0.1)
    mon = open_fake(clock)
    # the worker lengthens every timed loop to this; ten counter periods
    assert mon.min_window_s >= 10 * 0.1
    mon.begin_window()
    clock.t += 0.05
    r = mon.end_window()
    assert r.energy_j is None and r.power_w_mean is None
    assert r.source.startswith("nvml:energy-counter; not reported: window 0.050 s")


def test_counter_that_did_not_move_is_flagged(clock: FakeClock) -> None:
    # a counter updating every 5 s cannot resolve a 1.5 s window that falls between ticks
    fake.configure(mean_w=250.0, counter_period_s=5.0)
    mon = open_fake(clock)
    mon.begin_window()
    clock.t = 11.5
    r = mon.end_window()
    assert r.energy_j is None and r.power_w_mean is None
    assert "counter did not advance" in r.source


def test_fallback_to_sampling_when_the_counter_is_not_supported(clock: FakeClock) -> None:
    fake.configure(counter=False, instant=True)
    assert open_fake(clock).source == "nvml:sampled-instant"
    fake.configure(counter=False, instant=False, power_usage=True)
    mon = open_fake(clock)
    assert mon.source == "nvml:sampled-average" and mon.min_window_s >= 5.0
    fake.configure(counter=False, instant=False, power_usage=False)
    none = nv.open_nvml_monitor("cuda:0", module=MODULE, uuid_of=lambda i: None)
    assert isinstance(none, NullPowerMonitor)
    assert none.source == "unavailable: GPU reports no power"


def test_missing_library_gives_the_null_monitor() -> None:
    fake.configure(library=False)
    try:
        mon = nv.open_nvml_monitor("cuda:0", module=MODULE, uuid_of=lambda i: None)
    finally:
        fake.configure()
    assert isinstance(mon, NullPowerMonitor)
    assert mon.source == "unavailable: no NVML library"
    assert mon.end_window().energy_j is None
    absent = nv.open_nvml_monitor("cuda:0", module="no_such_nvml_module_here")
    assert absent.source == "unavailable: no NVML library"
    assert "nvidia-ml-py" in (absent.note or "")


def test_missing_device_gives_the_null_monitor(clock: FakeClock) -> None:
    mon = nv.open_nvml_monitor("cuda:3", module=MODULE, uuid_of=lambda i: None)
    assert mon.source == "unavailable: no NVML device for cuda:3"


def _analytic_j(t0: float, t1: float) -> float:
    return fake.energy_j(t1) - fake.energy_j(t0)


def test_integration_of_a_known_trace_is_within_one_percent() -> None:
    fake.configure(mean_w=180.0, amp_w=90.0, period_s=0.37)
    try:
        points = [(0.004 + 0.02 * i, fake.power_w(0.004 + 0.02 * i)) for i in range(120)]
        t0, t1 = 0.011, 2.333
        got = nv.integrate_j(points, t0, t1)
        want = _analytic_j(t0, t1)
    finally:
        fake.configure()
    assert got == pytest.approx(want, rel=0.01)
    # a linear trace is integrated exactly by the trapezoidal rule
    line = [(t, 100.0 + 40.0 * t) for t in (0.0, 0.3, 0.5, 1.2, 2.0)]
    assert nv.integrate_j(line, 0.1, 1.9) == pytest.approx(100 * 1.8 + 20 * (1.9**2 - 0.1**2))
    assert nv.integrate_j(line[:1], 0.1, 1.9) is None


def test_sampled_monitor_integrates_the_trace_within_one_percent(clock: FakeClock) -> None:
    fake.configure(counter=False, mean_w=150.0, amp_w=60.0, period_s=0.45)
    mon = open_fake(clock)
    clock.t = 5.003
    mon.begin_window()
    clock.t = 7.411
    r = mon.end_window()
    want = _analytic_j(5.003, 7.411)
    assert r.source == "nvml:sampled-instant"
    assert r.energy_j == pytest.approx(want, rel=0.01)
    assert r.power_w_mean == pytest.approx(want / 2.408, rel=0.01)


def test_sampler_process_integrates_a_real_time_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real sampler process (spawned, importing the fake by name) on the real clock."""
    cfg = dict(counter=False, mean_w=220.0, amp_w=80.0, period_s=0.3, epoch=time.monotonic())
    monkeypatch.setenv("FAKE_NVML_CONFIG", fake.config_json(**cfg))
    fake.configure(**cfg)
    edges: list[float] = []

    def recording_clock() -> float:
        edges.append(time.monotonic())
        return edges[-1]

    mon = nv.open_nvml_monitor(
        "cuda:0", module=MODULE, uuid_of=lambda i: None, clock=recording_clock
    )
    try:
        assert isinstance(mon, nv.NvmlMonitor)
        mon.begin_window()
        time.sleep(1.2)
        r = mon.end_window()
        # clock calls: begin edge telemetry, window start, window end, end edge telemetry
        assert len(edges) == 4
        t0, t1 = edges[1], edges[2]
        want = _analytic_j(t0, t1)
    finally:
        mon.close()
        fake.configure()
        fake._initialized = False
    assert r.duration_s == pytest.approx(t1 - t0)
    assert r.energy_j == pytest.approx(want, rel=0.01)
    assert r.gpu_clock_mhz == 1410 and r.gpu_mem_clock_mhz == 1215


def test_throttle_reasons_are_decoded() -> None:
    assert nv.decode_reasons(0) == (False, "")
    assert nv.decode_reasons(0x4 | 0x40 | 0x1) == (True, "sw_power_cap,hw_thermal")
    assert nv.decode_reasons(0x8) == (True, "hw_slowdown")
    assert nv.decode_reasons(0x20 | 0x80) == (True, "sw_thermal,hw_power_brake")
    assert nv.decode_reasons(0x1 | 0x10) == (False, "sync_boost")
    assert nv.decode_reasons(0x2 | 0x10000) == (False, "applications_clocks,other_0x10000")


def test_a_throttle_burst_inside_the_window_marks_the_cell(clock: FakeClock) -> None:
    # HW thermal slowdown for 0.3 s in the middle of the window, idle bit at all times
    fake.configure(mean_w=250.0, reasons=0x1, burst_from=10.5, burst_to=10.8, burst_reasons=0x40)
    mon = open_fake(clock)
    mon.begin_window()
    clock.t = 11.5
    r = mon.end_window()
    assert r.throttled is True and r.throttle_reasons == "hw_thermal"
    assert (r.gpu_clock_mhz, r.gpu_mem_clock_mhz, r.gpu_temp_c) == (1410, 1215, 61)
    fake.configure(mean_w=250.0, reasons=0x1, burst_from=20.0, burst_to=21.0, burst_reasons=0x40)
    mon.begin_window()
    clock.t = 13.0
    quiet = mon.end_window()
    assert quiet.throttled is False and quiet.throttle_reasons == ""


def test_idle_power_uses_a_window_of_the_given_length(clock: FakeClock) -> None:
    fake.configure(mean_w=42.0)
    mon = open_fake(clock)
    assert mon.idle_power_w(3.0) == pytest.approx(42.0, abs=1e-3)
    assert math.isclose(clock.t, 13.0)
