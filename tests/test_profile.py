"""bench/profile.py: layer grouping, per-layer multiply-adds by hand and bytes against the
traffic counter's total, layer times that come from the hooks (sleeping layers give lower
bounds that cannot flake), the gap, refused configurations and the output formats."""

from __future__ import annotations

import csv
import io
import json
import re
import time
from dataclasses import fields, replace
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from bench.errors import InvalidOption, UnknownModel
from bench.probes.macs import count_macs
from bench.probes.traffic import count_traffic
from bench.profile import (
    PROFILE_COLUMNS,
    LayerTime,
    Profile,
    profile_model,
    profile_module,
)
from bench.profile_format import format_profile, profile_frame
from bench.profile_layers import layer_group

QUICK = dict(rounds=2, min_time_s=0.02, warmup_s=0.0, threads=1)


class Nap(nn.Module):
    """A layer that sleeps ``s`` seconds: a known lower bound on its time."""

    def __init__(self, s: float) -> None:
        super().__init__()
        self.s = s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(self.s)
        return x


class Mixed(nn.Module):
    """Plain, depthwise and grouped convolutions, norm, activation, pool and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.act = nn.ReLU()
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.grouped = nn.Conv2d(8, 16, 1, groups=4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn(self.conv(x)))
        x = self.act(self.dw(x))  # the activation runs twice
        return self.fc(self.pool(self.grouped(x)).flatten(1))


class Residual(nn.Module):
    """A container that works itself: a residual add, a matmul and a 30 ms sleep."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.mix = nn.Parameter(torch.ones(8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.03)
        return (x + self.conv(x)) @ self.mix


class Attend(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def by_name(p: Profile) -> dict[str, LayerTime]:
    return {r.name: r for r in p.rows}


@pytest.fixture(scope="module")
def mixed() -> Profile:
    return profile_module(Mixed, (2, 3, 16, 16), **QUICK)


def test_groups_tell_depthwise_from_grouped_and_plain_convolutions() -> None:
    assert layer_group(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise conv"
    assert layer_group(nn.Conv2d(8, 16, 3, groups=8)) == "depthwise conv"  # multiplier 2
    assert layer_group(nn.Conv2d(8, 16, 1, groups=4)) == "conv"
    assert layer_group(nn.Conv2d(1, 1, 3, groups=1)) == "conv"  # groups == in_channels == 1
    assert layer_group(nn.Conv1d(4, 4, 3, groups=4)) == "depthwise conv"
    expected = {
        "linear": [nn.Linear(2, 2), nn.LazyLinear(2)],
        "norm": [nn.BatchNorm2d(2), nn.LayerNorm(2), nn.GroupNorm(1, 2), nn.InstanceNorm2d(2)],
        "activation": [nn.ReLU(), nn.ReLU6(), nn.GELU(), nn.SiLU(), nn.Hardswish(), nn.Softmax()],
        "pool": [nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1), nn.AvgPool1d(2)],
        "attention": [nn.MultiheadAttention(4, 1)],
        "other": [nn.Dropout(), nn.Identity(), nn.Flatten(), nn.Upsample(scale_factor=2)],
    }
    for group, modules in expected.items():
        assert [layer_group(m) for m in modules] == [group] * len(modules)
    ours = type("WindowAttention", (nn.Module,), {})()
    assert layer_group(ours) == "attention"


def test_rows_are_the_leaf_layers_in_execution_order(mixed: Profile) -> None:
    assert [r.name for r in mixed.rows] == ["conv", "bn", "act", "dw", "grouped", "pool", "fc"]
    rows = by_name(mixed)
    assert rows["act"].calls == 2 and rows["conv"].calls == 1
    assert mixed.leaf_calls == 8
    assert [rows[n].group for n in ("conv", "dw", "grouped", "bn", "act", "pool", "fc")] == [
        "conv", "depthwise conv", "conv", "norm", "activation", "pool", "linear",
    ]  # fmt: skip
    assert mixed.batch_size == 2 and mixed.image_size == 16 and mixed.threads == 1
    assert mixed.model == "Mixed" and mixed.config == "eager"


def test_multiply_adds_by_hand_and_summing_to_count_macs_times_batch(mixed: Profile) -> None:
    rows, b, hw = by_name(mixed), 2, 16 * 16
    assert rows["conv"].macs == b * 8 * hw * 3 * 3 * 3  # Cout·H·W·(Cin/groups)·k²
    assert rows["dw"].macs == b * 8 * hw * 1 * 3 * 3
    assert rows["grouped"].macs == b * 16 * hw * (8 // 4) * 1
    assert rows["fc"].macs == b * 16 * 10
    assert rows["bn"].macs == rows["act"].macs == rows["pool"].macs == 0
    per_image = count_macs(Mixed, (1, 3, 16, 16))
    assert sum(r.macs for r in mixed.rows) == b * per_image
    assert mixed.outside_macs == 0


def test_bytes_by_layer_sum_to_the_traffic_total(mixed: Profile) -> None:
    total = count_traffic(Mixed, (2, 3, 16, 16), "float32").bytes_accessed
    assert sum(r.bytes for r in mixed.rows) + mixed.outside_bytes == total
    # convolution: input, weight and bias read, output written, 4 bytes each
    conv = (2 * 3 * 16 * 16 + 8 * 3 * 3 * 3 + 8 + 2 * 8 * 16 * 16) * 4
    assert by_name(mixed)["conv"].bytes == conv
    assert mixed.outside_bytes == 0  # the flatten in Mixed.forward is a view: no bytes
    assert sum(g.bytes for g in mixed.groups) == sum(r.bytes for r in mixed.rows)


def test_work_in_containers_is_outside_the_rows_and_in_the_gap() -> None:
    p = profile_module(Residual, (1, 4, 8, 8), **QUICK)
    assert [r.name for r in p.rows] == ["conv"]
    conv = 4 * 64 * 4 * 9
    matmul = 4 * 8 * 8 * 8  # (1·4·8)×8 @ 8×8
    assert p.rows[0].macs == conv
    assert p.outside_macs == matmul
    assert p.rows[0].macs + p.outside_macs == count_macs(Residual, (1, 4, 8, 8))
    total = count_traffic(Residual, (1, 4, 8, 8)).bytes_accessed
    assert p.rows[0].bytes + p.outside_bytes == total
    assert p.forward_ms >= 30.0  # the container's sleep is in the plain forward ...
    assert p.gap_ms > 20.0  # ... and in no layer (unless the conv's median took 10 ms)
    assert p.gap_ms == pytest.approx(p.forward_ms - p.sum_layers_ms)
    assert p.hook_overhead_ms > 0
    assert f"{matmul:,} multiply-adds run there" in p.gap_note


def test_layer_times_come_from_the_hooks_and_a_layer_sums_its_calls() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.nap = Nap(0.01)
            self.once = Nap(0.005)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.once(self.nap(self.nap(self.conv(x))))

    p = profile_module(Net, (1, 3, 8, 8), **QUICK)
    rows = by_name(p)
    assert rows["nap"].calls == 2 and rows["once"].calls == 1
    assert rows["nap"].time_ms >= 20.0
    assert rows["once"].time_ms >= 5.0
    assert rows["nap"].share > 0.5
    assert rows["nap"].group == "other"
    assert sum(r.share for r in p.rows) == pytest.approx(1.0)
    assert p.sum_layers_ms == pytest.approx(sum(r.time_ms for r in p.rows))
    assert p.forward_ms >= 25.0 and p.hooked_forward_ms >= 25.0
    assert p.hooked_forwards >= 2 and len(p.forward_samples_ms) >= 2
    table = format_profile(p, "table").splitlines()
    assert table[3].startswith("nap ")  # slowest first


def test_a_module_whose_children_never_run_is_timed_itself() -> None:
    p = profile_module(Attend, (1, 5, 16), **QUICK)
    assert [(r.name, r.group) for r in p.rows] == [("attn", "attention")]
    assert p.rows[0].macs == count_macs(Attend, (1, 5, 16))
    assert p.outside_macs == 0


@pytest.mark.parametrize(
    "config", ["compile", "compile:aot_eager", "cudagraphs", "channels_last+compile-max-autotune"]
)
def test_compiled_configurations_are_refused_with_what_to_do(config: str) -> None:
    with pytest.raises(InvalidOption, match="profile eager") as info:
        profile_model("tiny_mlp", config=config)
    assert "effbench run" in str(info.value)


def test_channels_last_and_autocast_run_with_hooks() -> None:
    last = profile_module(Mixed, (1, 3, 16, 16), config="channels_last", **QUICK)
    assert last.config == "channels_last" and len(last.rows) == 7
    auto = profile_module(
        Mixed,
        (1, 3, 16, 16),
        config="autocast",
        dtype="bfloat16",
        **QUICK,
    )
    assert auto.config == "autocast" and auto.dtype == "bfloat16"
    assert [r.name for r in auto.rows] == [r.name for r in last.rows]
    with pytest.raises(InvalidOption, match="bfloat16"):
        profile_module(Mixed, (1, 3, 16, 16), config="autocast", **QUICK)


def test_registered_model_threads_restored_and_ceiling() -> None:
    before = torch.get_num_threads()
    p = profile_model(
        "tiny_mlp", batch_size=3, rounds=1, min_time_s=0.02, warmup_s=0.0, threads=1,
        ceiling_macs_per_s=1e15,  # above any layer here (a layer above it has no fraction)
    )  # fmt: skip
    assert torch.get_num_threads() == before
    assert p.model == "tiny_mlp" and p.batch_size == 3 and p.image_size == 8
    assert [r.name for r in p.rows] == ["net.0", "net.1", "net.2", "net.3"]
    assert sum(r.macs for r in p.rows) == 3 * count_macs(
        lambda: nn.Sequential(nn.Flatten(), nn.Linear(192, 64), nn.ReLU(), nn.Linear(64, 10)),
        (1, 3, 8, 8),
    )
    linear = by_name(p)["net.1"]
    assert linear.achieved_macs_per_s == pytest.approx(linear.macs / (linear.time_ms / 1e3))
    assert linear.compute_fraction == pytest.approx(linear.achieved_macs_per_s / 1e15)
    with pytest.raises(UnknownModel, match="tiny_mlp"):
        profile_model("tiny_mpl")


def test_bad_options_are_refused_before_measuring() -> None:
    for kwargs in ({"dtype": "float64"}, {"batch_size": 0}, {"rounds": 0}, {"threads": 0}):
        with pytest.raises(InvalidOption):
            profile_model("tiny_mlp", **kwargs)
    with pytest.raises(InvalidOption, match="table, json, csv"):
        format_profile(profile_module(lambda: Nap(0.0), (1, 1), **QUICK), "yaml")


def test_csv_and_json_carry_every_field(mixed: Profile) -> None:
    names = [f.name for f in fields(LayerTime)]
    parsed = list(csv.DictReader(io.StringIO(format_profile(mixed, "csv"))))
    assert list(parsed[0]) == names
    assert [r["name"] for r in parsed] == [r.name for r in mixed.rows]
    assert [int(r["macs"]) for r in parsed] == [r.macs for r in mixed.rows]
    assert all(r["compute_fraction"] == "" for r in parsed)  # no ceiling given
    data = json.loads(format_profile(mixed, "json"))
    assert set(data) == {f.name for f in fields(Profile)}
    assert [r["name"] for r in data["rows"]] == [r.name for r in mixed.rows]
    assert data["forward_ms"] == mixed.forward_ms
    assert {g["group"] for g in data["groups"]} == {r.group for r in mixed.rows}
    table = format_profile(mixed, "table")
    assert "total: layers sum" in table and "MAC share" in table


def test_frame_has_the_report_columns_and_survives_parquet(mixed: Profile, tmp_path: Path) -> None:
    frame = profile_frame([mixed, mixed], "host", "2026-01-01T00:00:00Z")
    assert tuple(frame.columns) == PROFILE_COLUMNS
    assert len(frame) == 2 * len(mixed.rows)
    assert frame["layer"].tolist()[: len(mixed.rows)] == [r.name for r in mixed.rows]
    assert frame["compute_fraction"].isna().all() and frame["hostname"].eq("host").all()
    frame.to_parquet(tmp_path / "profile.parquet")
    back = pd.read_parquet(tmp_path / "profile.parquet")
    assert tuple(back.columns) == PROFILE_COLUMNS
    assert back["macs"].tolist() == frame["macs"].tolist()
    assert tuple(profile_frame([], "host", "t").columns) == PROFILE_COLUMNS


def test_the_gap_note_names_noise_and_cuda_launches(mixed: Profile) -> None:
    from bench.profile import _gap_note

    quiet = _gap_note(replace(mixed, noisy=False, device="cpu"))
    assert "noisy" not in quiet and "CUDA" not in quiet
    assert f"{mixed.leaf_calls} leaf calls" in quiet
    loud = _gap_note(replace(mixed, noisy=True, device="cuda:0"))
    assert "noisy" in loud and "launch latency" in loud
    over = _gap_note(replace(mixed, gap_ms=-5.0, hook_overhead_ms=1.0))
    assert "exceeds the plain forward by 4.000 ms" in over


def test_ceiling_share_is_never_a_fraction_above_the_ceiling() -> None:
    from bench.profile import ceiling_share

    assert ceiling_share(50.0, 100.0) == (0.5, False)
    assert ceiling_share(101.0, 100.0, ci_rel=0.02) == (1.01, False)  # within its ±2%
    assert ceiling_share(103.0, 100.0, ci_rel=0.02) == (None, True)
    assert ceiling_share(100.5, 100.0) == (None, True)  # no uncertainty known: any excess
    assert ceiling_share(None, 100.0) == (None, False)
    assert ceiling_share(50.0, None) == (None, False)


def test_layers_above_a_low_ceiling_are_implausible_not_percentages() -> None:
    # a fake ceiling of 1 MAC/s: every layer that multiplies is far above it
    p = profile_module(Mixed, (2, 3, 16, 16), ceiling_macs_per_s=1.0, ceiling_ci_rel=0.05,
                       **QUICK)  # fmt: skip
    with_macs = [r for r in p.rows if r.macs]
    assert with_macs and all(r.above_ceiling and r.compute_fraction is None for r in with_macs)
    assert not any(r.above_ceiling for r in p.rows if not r.macs)
    table = format_profile(p, "table")
    lines = table.splitlines()
    (totals,) = [ln for ln in lines if ln.startswith("total:")]
    layers = lines[: lines.index(totals)]  # the layer table (the group table follows)
    for r in with_macs:
        (line,) = [ln for ln in layers if ln.startswith(r.name + " ")]
        assert line.endswith("above roof (implausible)")
    assert not [pct for pct in re.findall(r"(\d+\.\d)%", table) if float(pct) > 100]
    assert (
        f"{len(with_macs)} layer(s) ran above the measured compute ceiling (0.00 GMAC/s ±5.0%): "
        "implausible" in totals
    )
    assert "effbench peak" in totals
    assert frame_fraction_is_empty(p)
    # a ceiling far above every layer: shares, no note
    high = profile_module(Mixed, (2, 3, 16, 16), ceiling_macs_per_s=1e18, **QUICK)
    assert not any(r.above_ceiling for r in high.rows)
    assert "above the measured compute ceiling" not in format_profile(high, "table")
    assert all(r.compute_fraction is not None and r.compute_fraction < 1 for r in high.rows)


def frame_fraction_is_empty(p: Profile) -> bool:
    """The parquet frame carries no fraction for a layer above the ceiling either."""
    frame = profile_frame([p], "host", "t")
    above = [r.name for r in p.rows if r.above_ceiling]
    return bool(frame.loc[frame["layer"].isin(above), "compute_fraction"].isna().all())
