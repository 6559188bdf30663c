"""`effbench report`: figures, page and tables from the committed CPU fixture and from a
SYNTHETIC multi-device fixture generated below (clearly labelled; never measured).

The committed fixture ``tests/data/runs/cpu-sample`` was written by a real CPU sweep::

    PYTHONPATH=tests/plugins EFFBENCH_PLUGINS=effbench_test_models effbench run \\
        --models squeezenet1_1,mobilenet_v3_small,shufflenet_v2_x0_5,resnet18,crash_at2 \\
        --batch-sizes 1,2,4 --min-time 0.3 --max-time 1 --threads 1 \\
        --out tests/data/runs --run-id cpu-sample

(``crash_at2`` is a test network that aborts at batch 2: it gives a real ``crashed`` and a
real ``skipped`` row, and an ``ok`` network with no published accuracy.)
"""

from __future__ import annotations

import html.parser
import json
import math
import re
import shutil
import statistics
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from factories import make_row
from matplotlib.collections import PathCollection
from matplotlib.text import Text

from bench.cli import main
from bench.report import build_report
from bench.report.analyses import fit_line, pareto_front
from bench.report.canvas import HOLLOW_LABEL
from bench.report.data import Superseded, load_report_data
from bench.report.figures import FIGURES, figure
from bench.report.labels import place_labels
from bench.report.summary import summary_table
from bench.schema import Row
from bench.store import load_results, read_manifest, write_manifest, write_row

FIXTURE = Path(__file__).parent / "data" / "runs" / "cpu-sample"
SYNTHETIC_GPU = "SYNTHETIC GPU (generated test data, not a measurement)"
# Every figure of bench.report.figures.FIGURES, numbered in order: "01-...", "02-...", ...
ALL_FIGURE_NUMBERS = [f"{i:02d}-" for i in range(1, len(FIGURES) + 1)]
# The figures these tests draw, by slug: their numbers come from the registry's order.
accuracy_vs_ops = figure("accuracy-vs-ops")
accuracy_vs_throughput = figure("accuracy-vs-throughput")
time_vs_batch, ops_vs_time = figure("time-per-image"), figure("ops-vs-time")
power_vs_batch, energy_vs_accuracy = figure("power"), figure("energy-vs-accuracy")
memory_vs_batch, memory_vs_params = figure("memory"), figure("memory-vs-params")
speedup_vs_eager, roofline = figure("speedup-vs-eager"), figure("roofline")
layer_types = figure("layer-types")
POWER_FIGURES = (power_vs_batch.name, energy_vs_accuracy.name)
SPEEDUP_FIGURE = speedup_vs_eager.name  # left out of eager-only data (both fixtures below)
ROOFLINE_FIGURE = roofline.name  # left out of the CPU fixture (made before the columns)
LAYER_FIGURE = layer_types.name  # left out without a profile (the CPU fixture has none)
# SYNTHETIC ceilings of the synthetic GPU (MACs/s and bytes/s; made up, never measured).
SYNTHETIC_GEMM = {"float32": 2.0e12, "float16": 8.0e12}
SYNTHETIC_TRIAD = 1.0e12
CUDA_MEMORY_METHOD = "cuda_max_memory_allocated; one forward after the timed window"


# --------------------------------------------------------------------------- synthetic data


def to_plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return [float(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and math.isnan(v):
        return None
    return v


def ceiling_rows(device: str, dtype: str, threads: int, host: str, **values: float) -> list:
    """SYNTHETIC ``ceilings.parquet`` rows (the columns of ``bench.store.load_ceilings``):
    one per ``kind=value``; datasheet kinds get a citation."""
    unit = {"gemm": "macs_per_s", "conv3x3": "macs_per_s", "datasheet_compute": "macs_per_s"}
    return [
        dict(device=device, device_name=device, dtype=dtype, threads=threads, kind=kind,
             value=float(v), unit=unit.get(kind, "bytes_per_s"),
             source="datasheet" if kind.startswith("datasheet") else "measured",
             method="synthetic", ci_rel=0.01, samples=10,
             citation="Synthetic sheet, table 2" if kind.startswith("datasheet") else None,
             hostname=host, measured_at="2026-01-01T00:00:00+00:00")
        for kind, v in values.items()
    ]  # fmt: skip


def layer_rows(
    model: str, groups: dict[str, tuple[float, float]], forward_ms: float, **key: object
) -> list[dict[str, object]]:
    """SYNTHETIC ``profile-*.parquet`` rows (the columns of ``effbench profile --out``): one
    layer per group, ``groups[g] = (time_ms, macs)``."""
    total = sum(t for t, _ in groups.values())
    base = dict(model=model, device="cpu", device_name="cpu", dtype="float32", batch_size=1,
                image_size=224, config="eager", threads=1, hostname="box",
                timestamp="2026-01-02T00:00:00+00:00")  # fmt: skip
    base.update(key)
    return [
        {**base, "layer": f"{g}.0", "type": "Synthetic", "group": g, "calls": 1, "time_ms": t,
         "share": t / total, "macs": int(m), "bytes": 1000, "achieved_macs_per_s": None,
         "compute_fraction": None, "forward_ms": forward_ms, "sum_layers_ms": total}
        for g, (t, m) in groups.items()
    ]  # fmt: skip


def make_synthetic_runs(root: Path) -> list[Path]:
    """SYNTHETIC multi-device input: a copy of the real CPU fixture (host ``vm``) plus a
    made-up run on a made-up host with a fake GPU in two dtypes, each cell written twice
    (repeats 0 and 1: latency x0.1 and x0.3 of the CPU's for float32, half that for float16)
    with made-up power (100 + 10·batch·k W, idle 40 W), made-up roofline columns and
    ceilings (``ceilings.parquet``), one ``oom`` row, and a folder holding a made-up
    per-layer profile of one network on that GPU. It exercises faceting, the median of
    repeats, the power, roofline and layer-type figures; its numbers mean nothing."""
    cpu_dir = root / "cpu-sample"
    shutil.copytree(FIXTURE, cpu_dir)
    gpu_dir = root / "synthetic-gpu"
    gpu_dir.mkdir()
    manifest = read_manifest(FIXTURE)
    manifest.update(run_id="synthetic-gpu", argv=["synthetic test data"], synthetic=True)
    manifest["environment"] = {
        **manifest["environment"],
        "hostname": "synthetic-gpu-host",
        "gpus": [{"name": SYNTHETIC_GPU}],
    }
    write_manifest(gpu_dir, manifest)
    real = load_results([FIXTURE])
    ok = real[real["status"] == "ok"]
    for rec in ok.to_dict("records"):
        rec = {k: to_plain(v) for k, v in rec.items()}
        b = rec["batch_size"]
        for dtype, factor in (("float32", 0.1), ("float16", 0.05)):
            for repeat, k in ((0, 1.0), (1, 3.0)):
                r = dict(rec)
                scale = factor * k
                for col in ("latency_ms_median", "latency_ms_mean", "latency_ms_p10"):
                    r[col] = rec[col] * scale
                r["latency_ms_p90"] = rec["latency_ms_p90"] * scale
                r["latency_ms_samples"] = [s * scale for s in rec["latency_ms_samples"]]
                r["time_per_image_ms"] = r["latency_ms_median"] / b
                r["throughput_ips"] = b / (r["latency_ms_median"] / 1e3)
                r["power_w_mean"] = 100.0 + 10.0 * b * k
                r["power_w_idle"] = 40.0
                r["energy_per_image_j"] = r["power_w_mean"] * r["time_per_image_ms"] / 1e3
                r["power_source"] = "synthetic"
                if rec["macs"]:
                    r["achieved_macs_per_s"] = rec["macs"] * b / (r["latency_ms_median"] / 1e3)
                    r["compute_fraction"] = r["achieved_macs_per_s"] / SYNTHETIC_GEMM[dtype]
                    r["bytes_per_image"] = rec["weights_bytes"] / b + 2e6
                    r["intensity_macs_per_byte"] = rec["macs"] / r["bytes_per_image"]
                r["activation_peak_bytes"] = 3_000_000 * b
                r["memory_method"] = CUDA_MEMORY_METHOD
                r.update(
                    run_id="synthetic-gpu",
                    device="cuda:0",
                    device_name=SYNTHETIC_GPU,
                    dtype=dtype,
                    repeat=repeat,
                )
                slug = f"{r['model']}_cuda0_{dtype}_bs{b}_r{repeat}"
                write_row(gpu_dir, slug, Row.from_dict(r))
    oom = {k: to_plain(v) for k, v in ok.iloc[0].to_dict().items()}
    oom.update(
        run_id="synthetic-gpu",
        device="cuda:0",
        device_name=SYNTHETIC_GPU,
        dtype="float16",
        batch_size=64,
        status="oom",
        error="synthetic out of memory at batch 64",
        repeat=0,
    )
    write_row(gpu_dir, "oom_synthetic", Row.from_dict(oom))
    ceilings = []
    for dtype, gemm in SYNTHETIC_GEMM.items():
        ceilings += ceiling_rows("cuda:0", dtype, 0, "synthetic-gpu-host", gemm=gemm,
                                 conv3x3=0.6 * gemm, triad=SYNTHETIC_TRIAD,
                                 copy=0.9 * SYNTHETIC_TRIAD, datasheet_compute=1.5 * gemm,
                                 datasheet_bandwidth=1.3 * SYNTHETIC_TRIAD)  # fmt: skip
    pd.DataFrame(ceilings).to_parquet(gpu_dir / "ceilings.parquet")
    profile_dir = root / "profiles"
    profile_dir.mkdir()
    layers = layer_rows("mobilenet_v3_small",
                        {"conv": (0.2, 4.0e7), "depthwise conv": (0.15, 2.0e6),
                         "norm": (0.1, 0.0), "activation": (0.08, 0.0), "linear": (0.02, 1.0e6)},
                        0.6, device="cuda:0", device_name=SYNTHETIC_GPU,
                        hostname="synthetic-gpu-host")  # fmt: skip
    pd.DataFrame(layers).to_parquet(profile_dir / "profile-mobilenet_v3_small-synthetic.parquet")
    return [cpu_dir, gpu_dir, profile_dir]


# --------------------------------------------------------------------------- helpers


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def svg_size(path: Path) -> tuple[float, float]:
    root = ET.parse(path).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg", f"{path} is not an SVG"
    return float(root.get("width", "0").rstrip("pt")), float(root.get("height", "0").rstrip("pt"))


class _Links(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.hrefs: list[str] = []
        self.external: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.add(str(a["id"]))
        if tag == "img":
            self.imgs.append(str(a["src"]))
        if tag == "a" and a.get("href"):
            self.hrefs.append(str(a["href"]))
        if tag in {"script", "link", "iframe", "source", "video", "audio"} and (
            a.get("src") or a.get("href")
        ):
            self.external.append(f"<{tag}> {a.get('src') or a.get('href')}")


def _raw_ok_rows(folder: Path) -> list[dict[str, Any]]:
    """The ok rows of a run folder, read with pyarrow alone (not through effbench)."""
    rows = []
    for part in sorted(folder.glob("part-*.parquet")):
        rows += [r for r in pq.read_table(part).to_pylist() if r["status"] == "ok"]
    return rows


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "cpu"
    assert main(["report", str(FIXTURE), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def multi_inputs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return make_synthetic_runs(tmp_path_factory.mktemp("synthetic-runs"))


@pytest.fixture(scope="module")
def multi_report(tmp_path_factory: pytest.TempPathFactory, multi_inputs: list[Path]) -> Path:
    out = tmp_path_factory.mktemp("report") / "multi"
    assert main(["report", *map(str, multi_inputs), "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- tests


def test_committed_fixture_is_small_and_real() -> None:
    size = sum(p.stat().st_size for p in FIXTURE.rglob("*") if p.is_file())
    assert size < 1024**2
    manifest = read_manifest(FIXTURE)
    assert manifest["argv"][:2] == ["effbench", "run"]
    assert len(list(FIXTURE.glob("part-*.parquet"))) == manifest["planned_cells"] == 15


@pytest.mark.parametrize("which", ["cpu", "multi"])
def test_every_figure_is_a_sensible_image(which: str, cpu_report: Path, multi_report: Path):
    out = cpu_report if which == "cpu" else multi_report
    doc = json.loads((out / "report.json").read_text())
    drawn = {f["name"] for f in doc["figures"]}
    left_out = {f["name"] for f in doc["figures_left_out"]}
    # The CPU fixture has no power source, no roofline columns and no profile; the synthetic
    # one has power, roofline columns and ceilings in one setup, and a profile. Both are
    # eager only: no speed-up over eager to draw.
    cpu_only = {*POWER_FIGURES, ROOFLINE_FIGURE, LAYER_FIGURE}
    expected_out = (cpu_only if which == "cpu" else set()) | {SPEEDUP_FIGURE}
    assert left_out == expected_out
    assert drawn.isdisjoint(left_out)
    assert sorted(n[:3] for n in drawn | left_out) == ALL_FIGURE_NUMBERS
    for name in drawn:
        w, h = png_size(out / "figures" / f"{name}.png")
        assert 500 <= w <= 4000 and 250 <= h <= 4000, (name, w, h)
        sw, sh = svg_size(out / "figures" / f"{name}.svg")
        assert 200 <= sw <= 2000 and 100 <= sh <= 2000, (name, sw, sh)
    # Nothing but the figures drawn this time in figures/.
    assert {p.stem for p in (out / "figures").iterdir()} == drawn


@pytest.mark.parametrize("which", ["cpu", "multi"])
def test_page_references_every_figure_and_nothing_remote(
    which: str, cpu_report: Path, multi_report: Path
) -> None:
    out = cpu_report if which == "cpu" else multi_report
    page = (out / "index.html").read_text()
    links = _Links()
    links.feed(page)
    doc = json.loads((out / "report.json").read_text())
    assert sorted(links.imgs) == sorted(f"figures/{f['name']}.png" for f in doc["figures"])
    for ref in links.imgs + links.hrefs:
        if ref.startswith("#"):
            assert ref[1:] in links.ids, ref
        else:
            assert (out / ref).is_file(), ref
    assert links.external == []
    assert "http://" not in page and "https://" not in page and 'src="//' not in page
    for f in doc["figures_left_out"]:
        assert f["why"] in page or f["why"].replace("&", "&amp;") in page


def test_cpu_page_says_why_power_is_missing_and_lists_failures(cpu_report: Path) -> None:
    page = (cpu_report / "index.html").read_text()
    assert "No power was measured in these runs" in page
    assert "power measurement not implemented yet" in page  # the recorded power source
    assert "worker killed by SIGABRT" in page  # the crashed row
    assert "skipped: crashed at batch 2" in page  # the skipped row
    md = (cpu_report / "summary.md").read_text()
    assert "| crash_at2 | 2 | crashed |" in md
    # crash_at2 ran at batch 1 but has no published accuracy: said, not silently dropped.
    assert "crash_at2 has no published accuracy and is left out" in page


def test_report_json_records_the_runs_used(cpu_report: Path, multi_report: Path) -> None:
    doc = json.loads((cpu_report / "report.json").read_text())
    assert [(i["run_id"], i["rows"]) for i in doc["inputs"]] == [("cpu-sample", 15)]
    assert doc["inputs"][0]["path"] == str(FIXTURE)
    multi = json.loads((multi_report / "report.json").read_text())
    assert sorted(i["run_id"] for i in multi["inputs"]) == ["cpu-sample", "synthetic-gpu"]


def test_summary_csv_matches_the_raw_rows(cpu_report: Path) -> None:
    table = pd.read_csv(cpu_report / "summary.csv")
    raw = {(r["model"], r["batch_size"]): r for r in _raw_ok_rows(FIXTURE)}
    for _, row in table.iterrows():
        if (row["model"], 1) not in raw:
            continue
        ref = raw[(row["model"], 1)]
        assert row["time_per_image_ms_bs1"] == pytest.approx(ref["time_per_image_ms"], rel=1e-9)
        assert row["params_m"] == pytest.approx(ref["params"] / 1e6, rel=1e-9)
        assert row["peak_memory_mib_bs1"] == pytest.approx(
            ref["peak_memory_bytes"] / 2**20, rel=1e-9
        )
        best = max(
            (r for (m, _), r in raw.items() if m == row["model"]), key=lambda r: r["throughput_ips"]
        )
        assert row["throughput_ips_max"] == pytest.approx(best["throughput_ips"], rel=1e-9)
    assert set(table["model"]) == {r["model"] for r in raw.values()}


def test_power_and_energy_are_net_of_idle_only_where_idle_was_measured(tmp_path: Path) -> None:
    run = tmp_path / "power"
    run.mkdir()
    write_manifest(run, {"run_id": "power"})
    power = dict(power_w_mean=100.0, time_per_image_ms=2.0, energy_per_image_j=0.2)
    write_row(run, "idle", make_row("m", 1, power_w_idle=40.0, **power))
    write_row(run, "no-idle", make_row("m", 2, **power))
    write_row(run, "no-power", make_row("n", 1))
    data = load_report_data([run])
    cells = data.cells.set_index(["model", "batch_size"])
    assert cells.loc[("m", 1), "power_is_net"] and cells.loc[("m", 1), "energy_is_net"]
    assert cells.loc[("m", 1), "power_plot_w"] == pytest.approx(60.0)
    assert cells.loc[("m", 1), "energy_plot_per_image_j"] == pytest.approx(0.2 - 40.0 * 2e-3)
    assert not cells.loc[("m", 2), "power_is_net"] and not cells.loc[("m", 2), "energy_is_net"]
    assert cells.loc[("m", 2), "power_plot_w"] == 100.0
    assert cells.loc[("m", 2), "energy_plot_per_image_j"] == 0.2
    assert not cells.loc[("n", 1), "power_is_net"]
    assert math.isnan(cells.loc[("n", 1), "power_plot_w"])
    table = summary_table(data).set_index("model")  # the table shows the same choice
    assert table.loc["m", "power_w_max"] == 100.0
    assert table.loc["m", "energy_per_image_j_min"] == pytest.approx(0.2 - 40.0 * 2e-3)


def test_setups_are_not_averaged_and_repeats_take_the_median(
    multi_report: Path, multi_inputs: list[Path]
) -> None:
    table = pd.read_csv(multi_report / "summary.csv")
    setups = sorted(table["setup"].unique())
    assert len(setups) == 3, setups  # CPU, synthetic GPU float32, synthetic GPU float16
    cpu_raw = {r["model"]: r for r in _raw_ok_rows(multi_inputs[0]) if r["batch_size"] == 1}
    gpu_raw: dict[tuple[str, str], list[float]] = {}
    for r in _raw_ok_rows(multi_inputs[1]):
        if r["batch_size"] == 1:
            gpu_raw.setdefault((r["model"], r["dtype"]), []).append(r["time_per_image_ms"])
    for _, row in table.iterrows():
        if row["model"] not in cpu_raw:
            continue
        got = row["time_per_image_ms_bs1"]
        if SYNTHETIC_GPU in row["setup"]:
            dtype = "float16" if "float16" in row["setup"] else "float32"
            values = gpu_raw[(row["model"], dtype)]
            assert len(values) == 2 and row["repeats_max"] == 2
            assert got == pytest.approx(float(np.median(values)), rel=1e-9)
        else:
            assert got == pytest.approx(cpu_raw[row["model"]]["time_per_image_ms"], rel=1e-9)
            assert row["repeats_max"] == 1
    page = (multi_report / "index.html").read_text()
    assert "synthetic out of memory at batch 64" in page
    assert "synthetic-gpu-host" in page  # the environment of each run is shown


@pytest.mark.parametrize("name", [memory_vs_params.name, ops_vs_time.name])
def test_linear_fits_agree_with_numpy_on_the_raw_rows(cpu_report: Path, name: str) -> None:
    doc = json.loads((cpu_report / "report.json").read_text())
    fits = [f for f in doc["fits"] if f["figure"] == name]
    assert fits and (name != ops_vs_time.name or {f["batch_size"] for f in fits} == {1, 4})
    raw = _raw_ok_rows(FIXTURE)
    for fit in fits:
        rows = sorted(
            (r for r in raw if r["batch_size"] == fit["batch_size"]), key=lambda r: r["model"]
        )
        assert [r["model"] for r in rows] == fit["models"]
        if name == memory_vs_params.name:
            x = np.array([r["params"] for r in rows], dtype=float)
            y = np.array([r["peak_memory_bytes"] for r in rows], dtype=float)
        else:
            x = np.array([r["macs"] / 1e9 for r in rows])
            y = np.array([r["time_per_image_ms"] for r in rows])
        slope, intercept = np.polyfit(x, y, 1)
        r2 = np.corrcoef(x, y)[0, 1] ** 2
        assert fit["slope"] == pytest.approx(slope, rel=1e-9)
        assert fit["intercept"] == pytest.approx(intercept, rel=1e-9, abs=1e-9 * abs(y).max())
        assert fit["r2"] == pytest.approx(r2, rel=1e-9)
        assert fit["n"] == len(rows)
    page = (cpu_report / "index.html").read_text()
    f0 = fits[0]
    if name == memory_vs_params.name:
        assert f"each parameter adds {f0['slope']:.2f} bytes" in page
    else:
        assert f"R² = {f0['r2']:.3f}" in page


def test_fit_line_matches_numpy_on_noisy_data() -> None:
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 50, 40)
    y = 3.2 * x + 11 + rng.normal(0, 4, 40)
    fit = fit_line(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    assert (fit.slope, fit.intercept) == pytest.approx((slope, intercept), rel=1e-10)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-10)
    with pytest.raises(ValueError):
        fit_line([2.0, 2.0], [1.0, 3.0])


def test_pareto_front_by_hand() -> None:
    # (ops, accuracy): a is the cheapest, b and d each buy accuracy with ops; c is dominated
    # by b (more ops, less accuracy); e ties b on accuracy with more ops, so it is too.
    names = ["a", "b", "c", "d", "e"]
    ops = [1.0, 2.0, 3.0, 4.0, 2.5]
    acc = [50.0, 60.0, 55.0, 70.0, 60.0]
    assert pareto_front(names, ops, acc) == ["a", "b", "d"]


def test_pareto_frontier_is_named_on_the_page(cpu_report: Path) -> None:
    page = (cpu_report / "index.html").read_text()
    # Published (top-1, G-MACs) of the fixture: shufflenet_v2_x0_5 is cheapest, then
    # mobilenet_v3_small (more accurate), resnet18 (most accurate); squeezenet1_1 is
    # dominated by mobilenet_v3_small (more ops, less accurate).
    assert "shufflenet_v2_x0_5, mobilenet_v3_small and resnet18 are on it" in page


def _boxes(labels: list[Any]) -> list[Any]:
    fig = labels[0].figure
    renderer = fig.canvas.get_renderer()
    # The text's own box (an Annotation's extent would include its leader line).
    return [Text.get_window_extent(a, renderer) for a in labels]


def _assert_no_overlap(labels: list[Any]) -> None:
    boxes = _boxes(labels)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            a, b = boxes[i], boxes[j]
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            assert not (w > 0.5 and h > 0.5), (labels[i].get_text(), labels[j].get_text())


def test_bubble_chart_labels_do_not_overlap(multi_inputs: list[Path]) -> None:
    data = load_report_data(multi_inputs)
    for make in (accuracy_vs_ops, accuracy_vs_throughput):
        result = make(data)
        assert result.fig is not None
        result.fig.canvas.draw()
        labels = list(result.labels)
        assert len(labels) >= 4
        _assert_no_overlap(labels)


def test_place_labels_separates_a_crowded_cluster() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(3)
    xs, ys = rng.normal(10, 0.3, 12), rng.normal(5, 0.2, 12)
    ax.scatter(xs, ys)
    ax.set_xlim(0, 20)
    ax.set_ylim(0, 10)
    fig.canvas.draw()
    texts = [f"network_{i:02d}" for i in range(12)]
    labels = place_labels(ax, list(xs), list(ys), texts, [(0.2, 0.4, 0.6)] * 12)
    fig.canvas.draw()
    assert [a.get_text() for a in labels] != [] and len(labels) == 12
    _assert_no_overlap(labels)


@pytest.fixture(scope="module")
def fresh_process_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """The committed fixture's report built by ``build_report`` in a new interpreter (its
    own hash seed), and which of torch and the measuring modules that interpreter imported."""
    out = tmp_path_factory.mktemp("report") / "fresh"
    code = (
        "import json, sys\n"
        "from bench.report import build_report\n"
        f"build_report([{str(FIXTURE)!r}], {str(out)!r})\n"
        "print(json.dumps([m for m in ('torch', 'bench.runner', 'bench.worker', "
        "'bench.probes') if m in sys.modules]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return out, json.loads(r.stdout.splitlines()[-1])


def test_same_input_gives_identical_files(
    cpu_report: Path, fresh_process_report: tuple[Path, list[str]]
) -> None:
    """Byte for byte: the report of `effbench report` in this process and that of
    ``build_report`` in another interpreter."""
    fresh, _ = fresh_process_report
    names = sorted(p.relative_to(cpu_report) for p in cpu_report.rglob("*") if p.is_file())
    figures = json.loads((cpu_report / "report.json").read_text())["figures"]
    assert figures and {Path(f) for fig in figures for f in fig["files"]} <= set(names)
    assert names == sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    for rel in names:
        assert (cpu_report / rel).read_bytes() == (fresh / rel).read_bytes(), rel


def test_report_never_imports_torch(fresh_process_report: tuple[Path, list[str]]) -> None:
    out, imported = fresh_process_report
    assert (out / "index.html").is_file()
    assert imported == []


def test_bad_inputs_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbench: error:") and "does not exist" in err and "\n" not in err
    assert main(["report", str(FIXTURE), "--out", str(FIXTURE)]) == 2
    err = capsys.readouterr().err.strip()
    assert "is an effbench run folder" in err and "\n" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "holds no effbench results" in capsys.readouterr().err


def test_default_out_is_reports_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", str(FIXTURE)]) == 0
    assert (tmp_path / "reports" / "cpu-sample" / "index.html").is_file()


def test_summary_md_and_csv_are_safe_from_hostile_names(tmp_path: Path) -> None:
    import csv
    import io

    names = ["<script>alert(1)</script>", '=HYPERLINK("http://x")', "+1|*b*", "-2", "@cmd",
             r"tex$\frac{$"]  # fmt: skip
    run = tmp_path / "hostile"
    run.mkdir()
    write_manifest(run, {"run_id": "hostile"})
    real = load_results([FIXTURE])
    rec = {k: to_plain(v) for k, v in real[real["status"] == "ok"].iloc[0].to_dict().items()}
    for i, name in enumerate(names):
        r = {**rec, "model": name, "family": name, "device_name": "=cmd", "run_id": "hostile"}
        write_row(run, f"evil{i}", Row.from_dict(r))
    out = build_report([run], tmp_path / "report").out  # "$" in a name is no TeX
    md = (out / "summary.md").read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    rows = [ln for ln in md.splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + len(names)
    assert len({ln.count("|") - ln.count("\\|") for ln in rows}) == 1  # no cell broke out
    cells = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    assert sorted(c["model"] for c in cells) == sorted(
        "'" + n if n[0] in "=+-@" else n for n in names
    )
    assert all(c["setup"].startswith("'=cmd") for c in cells)
    assert all(float(c["params_m"]) == pytest.approx(rec["params"] / 1e6) for c in cells)


# --------------------------------------------------------------------------- configurations

# SYNTHETIC latencies (ms per batch, one entry per repeat) of networks "a" and "b" on one
# CPU in float32, per configuration; "b" under compile at batch 4 gives a wrong output.
CONFIG_LATENCIES: dict[tuple[str, str], dict[int, list[float]]] = {
    ("a", "eager"): {1: [10.0], 2: [16.0], 4: [28.0]},
    ("a", "compile"): {1: [3.0, 4.0, 5.0], 2: [8.0], 4: [20.0]},
    ("a", "channels_last"): {1: [12.5], 2: [15.0], 4: [28.0]},
    ("b", "eager"): {1: [6.0], 2: [9.0], 4: [16.0]},
    ("b", "compile"): {1: [5.0], 2: [6.0], 4: [0.1]},
}
WRONG_CELL = ("b", "compile", 4)
COMPILE_S = {("a", 1): 12.0, ("a", 2): 13.0, ("a", 4): 17.0, ("b", 1): 9.0, ("b", 2): 10.0,
             ("b", 4): 30.0}  # fmt: skip
# A second dtype (another panel of the speed-up figure): "a" only, eager and compile.
BF16_LATENCIES = {"eager": {1: 8.0, 2: 12.0}, "compile": {1: 2.0, 2: 4.0}}


def _timed(model: str, b: int, lat: float, repeat: int, **kw: object) -> Row:
    return make_row(
        model,
        b,
        repeat,
        latency_ms_median=lat,
        time_per_image_ms=lat / b,
        throughput_ips=b * 1e3 / lat,
        params=1000,
        macs=2000,
        **kw,
    )


def make_config_run(root: Path) -> Path:
    """A SYNTHETIC run folder of CONFIG_LATENCIES and BF16_LATENCIES (made up, never measured)."""
    run = root / "configs"
    run.mkdir()
    write_manifest(run, {"run_id": "configs"})
    for (model, config), by_batch in CONFIG_LATENCIES.items():
        for b, lats in by_batch.items():
            for repeat, lat in enumerate(lats):
                extra: dict[str, object] = {"max_abs_err": 1e-4, "max_rel_err": 1e-5}
                if config == "compile":
                    extra.update(compile_s=COMPILE_S[(model, b)], graph_breaks=0)
                if (model, config, b) == WRONG_CELL:
                    extra.update(max_abs_err=3.0, max_rel_err=0.5, output_ok=False)
                else:
                    extra["output_ok"] = True
                write_row(run, f"{model}-{config}-{b}-{repeat}",
                          _timed(model, b, lat, repeat, config=config, **extra))  # fmt: skip
    for config, by_batch in BF16_LATENCIES.items():
        for b, lat in by_batch.items():
            row = _timed("a", b, lat, 0, config=config, dtype="bfloat16", output_ok=True)
            write_row(run, f"a-bf16-{config}-{b}", row)
    return run


def _expected_speedups() -> dict[tuple[str, str, int], float]:
    """Eager latency ÷ configuration latency (medians of the repeats written above), float32,
    for the cells with a right output."""
    med = {k: {b: float(np.median(v)) for b, v in d.items()} for k, d in CONFIG_LATENCIES.items()}
    return {
        (m, c, b): med[(m, "eager")][b] / lat
        for (m, c), by_batch in med.items()
        if c != "eager"
        for b, lat in by_batch.items()
        if (m, c, b) != WRONG_CELL
    }


@pytest.fixture(scope="module")
def config_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_config_run(tmp_path_factory.mktemp("config-runs"))


@pytest.fixture(scope="module")
def config_report(tmp_path_factory: pytest.TempPathFactory, config_run: Path) -> Path:
    out = tmp_path_factory.mktemp("report") / "configs"
    assert main(["report", str(config_run), "--out", str(out)]) == 0
    return out


def test_speedup_figure_reads_the_constructed_speedups(config_report: Path) -> None:
    doc = json.loads((config_report / "report.json").read_text())
    (fig,) = [f for f in doc["figures"] if f["name"] == SPEEDUP_FIGURE]
    reading = fig["reading"]
    expected = _expected_speedups()
    # a at batch 1 under compile: 10 / median(3, 4, 5) = 2.5; channels_last at 1: 0.8
    best = max(expected, key=lambda k: expected[k])
    worst = min(expected, key=lambda k: expected[k])
    assert (best, worst) == (("a", "compile", 1), ("a", "channels_last", 1))
    f32 = "cpu · float32 · 1 thr"
    assert (
        f"On {f32}, the largest speed-up is {expected[best]:.2f}× (a, compile, batch 1) and "
        f"the smallest {expected[worst]:.2f}× (a, channels_last, batch 1)." in reading
    )
    assert "2.50×" in reading and "0.80×" in reading
    # the second dtype is its own panel: 8 / 2 = 4 at batch 1, 12 / 4 = 3 at batch 2
    bf16 = {b: BF16_LATENCIES["eager"][b] / BF16_LATENCIES["compile"][b] for b in (1, 2)}
    assert (
        f"On cpu · bfloat16 · 1 thr, the largest speed-up is {bf16[1]:.2f}× (a, compile, batch 1)"
        f" and the smallest {bf16[2]:.2f}× (a, compile, batch 2)." in reading
    )
    # the wrong-output cell (a 160× "speed-up") is in no reading
    assert f"{16.0 / 0.1:.2f}" not in reading
    compile_f32 = statistics.median(COMPILE_S.values())  # the wrong cell compiled too
    assert f"compile {compile_f32:.3g} s on {f32}" in reading


def test_speedup_figure_draws_one_panel_per_setup_and_a_line_at_one(config_run: Path) -> None:
    data = load_report_data([config_run])
    result = speedup_vs_eager(data)
    assert result.fig is not None and result.skipped is None
    axes = result.fig.axes
    assert [ax.get_title() for ax in axes] == ["cpu · bfloat16 · 1 thr", "cpu · float32 · 1 thr"]
    f32 = axes[1]
    at_one = [ln for ln in f32.get_lines() if list(ln.get_ydata()) == [1.0, 1.0]]
    assert at_one and at_one[0].get_linestyle() == "--"
    # a·compile, a·channels_last, b·compile (batches 1 and 2 only: batch 4 was wrong)
    curves = sorted(
        [float(v) for v in ln.get_ydata()] for ln in f32.get_lines() if ln not in at_one
    )
    expected = _expected_speedups()
    assert curves == sorted(
        [[expected[(m, c, b)] for b in (1, 2, 4) if (m, c, b) in expected]
         for m, c in (("a", "compile"), ("a", "channels_last"), ("b", "compile"))]
    )  # fmt: skip


@pytest.mark.parametrize(
    ("configs", "why"),
    [(("eager",), "Only the eager configuration was measured"),
     (("compile", "channels_last"), "No eager cell was measured")],
)  # fmt: skip
def test_speedup_figure_is_left_out_without_two_configurations(
    tmp_path: Path, configs: tuple[str, ...], why: str
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    write_manifest(run, {"run_id": "run"})
    for config in configs:
        write_row(run, f"m-{config}", _timed("m", 1, 2.0, 0, config=config))
    result = speedup_vs_eager(load_report_data([run]))
    assert result.fig is None and result.skipped is not None and why in result.skipped


def test_eager_only_setup_labels_do_not_name_the_configuration(tmp_path: Path) -> None:
    run = tmp_path / "eager"
    run.mkdir()
    write_manifest(run, {"run_id": "eager"})
    write_row(run, "m", _timed("m", 1, 2.0, 0))
    data = load_report_data([run])
    assert data.setups == ("cpu · float32 · 1 thr",) and not data.shows_config
    table = summary_table(data)
    assert "config" not in table.columns and "speedup_bs1" not in table.columns


def test_setups_name_their_configuration_and_figures_never_mix_them(config_run: Path) -> None:
    data = load_report_data([config_run])
    assert data.configs == ("eager", "channels_last", "compile")
    assert data.setups == (
        "cpu · bfloat16 · 1 thr · compile",
        "cpu · bfloat16 · 1 thr · eager",
        "cpu · float32 · 1 thr · channels_last",
        "cpu · float32 · 1 thr · compile",
        "cpu · float32 · 1 thr · eager",
    )
    result = time_vs_batch(data)
    assert result.fig is not None
    # one panel per setup, each machine's eager panel first
    assert [ax.get_title() for ax in result.fig.axes] == [
        "cpu · bfloat16 · 1 thr · eager",
        "cpu · bfloat16 · 1 thr · compile",
        "cpu · float32 · 1 thr · eager",
        "cpu · float32 · 1 thr · channels_last",
        "cpu · float32 · 1 thr · compile",
    ]
    for setup, g in data.cells.groupby("setup"):
        assert g["config"].nunique() == 1 and setup.endswith(" · " + g["config"].iloc[0])


def test_summary_has_a_row_per_network_and_configuration(config_run: Path) -> None:
    data = load_report_data([config_run])
    table = summary_table(data)
    f32 = table[table["base_setup"] == "cpu · float32 · 1 thr"]
    keys = list(zip(f32["model"], f32["config"], strict=True))
    assert keys == [("a", "eager"), ("a", "channels_last"), ("a", "compile"),
                    ("b", "eager"), ("b", "compile")]  # fmt: skip
    rows = f32.set_index(["model", "config"])
    for (model, config), by_batch in CONFIG_LATENCIES.items():
        right = {b: float(np.median(v)) / b for b, v in by_batch.items()
                 if (model, config, b) != WRONG_CELL}  # fmt: skip
        row = rows.loc[(model, config)]
        assert row["time_per_image_ms_bs1"] == pytest.approx(right[1], rel=1e-12)
        best = min(right, key=lambda b: right[b])
        assert row["time_per_image_ms_best"] == pytest.approx(right[best], rel=1e-12)
        assert row["best_batch_size"] == best
        eager_bs1 = float(np.median(CONFIG_LATENCIES[(model, "eager")][1]))
        assert row["speedup_bs1"] == pytest.approx(eager_bs1 / right[1], rel=1e-12)
        compiled = [v for (m, b), v in COMPILE_S.items() if m == model]
        if config == "compile":
            assert row["compile_s"] == pytest.approx(statistics.median(compiled))
        else:
            assert math.isnan(row["compile_s"])
    assert rows.loc[("b", "compile"), "output_ok"] == "WRONG at batch 4"
    assert rows.loc[("b", "compile"), "max_rel_err"] == 0.5
    assert rows.loc[("b", "compile"), "batch_sizes_ok"] == 2  # the wrong cell is not timed
    assert (rows.drop(index=[("b", "compile")])["output_ok"] == "ok").all()


def test_wrong_output_is_flagged_and_kept_out_of_the_figures(
    config_report: Path, config_run: Path
) -> None:
    data = load_report_data([config_run])
    cells = set(zip(data.cells["model"], data.cells["config"], data.cells["batch_size"],
                    strict=True))  # fmt: skip
    assert WRONG_CELL not in cells and ("b", "compile", 2) in cells
    assert [tuple(r) for r in data.wrong_output[["model", "config", "batch_size"]].values] == [
        WRONG_CELL
    ]
    page = (config_report / "index.html").read_text()
    assert '<p class="wrong"><strong>Wrong output: 1 cell(s)' in page
    assert "b compile batch 4 on cpu · float32 · 1 thr · compile" in page
    wrong_rows = re.findall(r'<tr class="wrong">(.*?)</tr>', page)
    assert len(wrong_rows) == 1 and ">b<" in wrong_rows[0] and "WRONG at batch 4" in page
    assert 'id="wrong-output"' in page and 'href="#wrong-output"' in page
    md = (config_report / "summary.md").read_text()
    assert "**Wrong output: 1 cell(s)" in md and "## Cells with wrong output" in md
    assert "| b | compile | WRONG at batch 4 |" in md
    doc = json.loads((config_report / "report.json").read_text())
    assert doc["configs"] == ["eager", "channels_last", "compile"]
    (wrong,) = doc["cells_wrong_output"]
    assert (wrong["model"], wrong["config"], wrong["batch_size"]) == WRONG_CELL
    assert wrong["max_rel_err"] == 0.5
    # the page says which configuration each figure shows
    assert "each panel shows one configuration, named at the end of its setup label" in page


def test_a_run_where_every_cell_failed_still_gives_a_report(tmp_path: Path) -> None:
    run = tmp_path / "failed"
    run.mkdir()
    write_manifest(run, {"run_id": "failed"})
    write_row(run, "m", make_row("m", 1, status="crashed", error="worker killed by SIGABRT"))
    result = build_report([run], tmp_path / "report")
    assert all(f.skipped for f in result.figures)
    assert "worker killed by SIGABRT" in (result.out / "index.html").read_text()
    assert "No cell finished" in (result.out / "summary.md").read_text()


# --------------------------------------------------------------------------- roofline, layers

# SYNTHETIC roofline run (made up, never measured): one CPU setup with measured roofs
# ROOF_GEMM MACs/s and ROOF_TRIAD bytes/s (ridge 5 MACs/byte), and per (network, batch) the
# intensity (MACs/byte) and achieved rate (MACs/s) of its cells.
ROOF_GEMM, ROOF_TRIAD, ROOF_CONV = 100e9, 20e9, 70e9
SHEET_GEMM, SHEET_TRIAD = 200e9, 50e9
ROOFLINE_CELLS: dict[tuple[str, int], tuple[float, float]] = {
    ("near", 1): (40.0, 60e9), ("near", 8): (80.0, 90e9),  # compute-bound, 90% of gemm
    ("second", 1): (2.0, 20e9), ("second", 8): (4.0, 50e9),  # left of the ridge
    ("slow", 1): (20.0, 2e9), ("slow", 8): (30.0, 5e9),  # far below the compute roof
    ("stuck", 1): (1.0, 0.2e9), ("stuck", 8): (2.0, 0.6e9),  # far below the sloped roof
}  # fmt: skip
ROOFLINE_MACS = 10**9
WEIGHTS_BYTES, ACTIVATION_BYTES_PER_IMAGE = 4_000_000, 1_000_000
ROOFLINE_HOST = "box"
CPU_MEMORY_METHOD = (
    "cpu_allocator_peak; one forward first, as the warm-up's first call; rss: vmhwm over the cell"
)


def make_roofline_run(root: Path, ceilings: bool = True) -> Path:
    """A SYNTHETIC run folder of ROOFLINE_CELLS with its ``ceilings.parquet`` (and decoys
    of another thread count and dtype that must not be used)."""
    run = root / "roofline"
    run.mkdir(parents=True)
    write_manifest(run, {"run_id": "roofline", "environment": {"hostname": ROOFLINE_HOST}})
    for (model, b), (intensity, rate) in ROOFLINE_CELLS.items():
        latency_ms = ROOFLINE_MACS * b / rate * 1e3
        row = make_row(model, b, run_id="roofline", macs=ROOFLINE_MACS, params=1000 * len(model),
                       weights_bytes=WEIGHTS_BYTES, latency_ms_median=latency_ms,
                       time_per_image_ms=latency_ms / b, throughput_ips=b * 1e3 / latency_ms,
                       bytes_per_image=ROOFLINE_MACS / intensity, intensity_macs_per_byte=intensity,
                       achieved_macs_per_s=rate, compute_fraction=rate / ROOF_GEMM,
                       activation_peak_bytes=ACTIVATION_BYTES_PER_IMAGE * b,
                       peak_memory_bytes=2 * (WEIGHTS_BYTES + ACTIVATION_BYTES_PER_IMAGE * b),
                       memory_method=CPU_MEMORY_METHOD)  # fmt: skip
        write_row(run, f"{model}-{b}", row)
    if ceilings:
        rows = ceiling_rows(
            "cpu",
            "float32",
            1,
            ROOFLINE_HOST,
            gemm=ROOF_GEMM,
            triad=ROOF_TRIAD,
            conv3x3=ROOF_CONV,
            copy=0.8 * ROOF_TRIAD,
            datasheet_compute=SHEET_GEMM,
            datasheet_bandwidth=SHEET_TRIAD,
        )
        rows += ceiling_rows("cpu", "float32", 2, ROOFLINE_HOST, gemm=1e15, triad=1e15)
        rows += ceiling_rows("cpu", "bfloat16", 1, ROOFLINE_HOST, gemm=1e15, triad=1e15)
        pd.DataFrame(rows).to_parquet(run / "ceilings.parquet")  # fmt: skip
    return run


def _roofline_answer() -> tuple[list[tuple[str, float, int]], list[tuple[str, float, int, float]]]:
    """Computed here from ROOFLINE_CELLS alone: the two networks with the highest fraction of
    the gemm roof (name, fraction, batch), and the two others with the lowest best fraction
    of min(gemm, triad × intensity) (name, fraction, batch, intensity)."""
    by_model: dict[str, list[tuple[int, float, float]]] = {}
    for (m, b), (i, r) in ROOFLINE_CELLS.items():
        by_model.setdefault(m, []).append((b, i, r))
    near = sorted(((m, *max((r / ROOF_GEMM, b) for b, _, r in cells)[::1])
                   for m, cells in by_model.items()), key=lambda t: -t[1])[:2]  # fmt: skip
    named = {m for m, *_ in near}
    far = []
    for m, cells in by_model.items():
        if m not in named:
            eff, b, i = max((r / min(ROOF_GEMM, ROOF_TRIAD * i), b, i) for b, i, r in cells)
            far.append((m, eff, b, i))
    return [(m, f, int(b)) for m, f, b in near], sorted(far, key=lambda t: t[1])[:2]


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2g}%"


def _lines_by_gid(ax: Any) -> dict[str, Any]:
    return {ln.get_gid(): ln for ln in ax.get_lines() if ln.get_gid()}


@pytest.fixture(scope="module")
def roofline_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_roofline_run(tmp_path_factory.mktemp("roofline"))


def test_roofline_draws_the_measured_roofs_and_the_ridge(roofline_run: Path) -> None:
    result = roofline(load_report_data([roofline_run]))
    assert result.fig is not None and result.skipped is None
    (ax,) = [a for a in result.fig.axes if a.get_title()]
    assert ax.get_title() == "cpu · float32 · 1 thr"
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    lines = _lines_by_gid(ax)
    ridge = ROOF_GEMM / ROOF_TRIAD  # 5 MACs/byte
    xs, ys = list(lines["roofline"].get_xdata()), list(lines["roofline"].get_ydata())
    assert len(xs) == 3 and xs[1] == pytest.approx(ridge)
    assert ys == pytest.approx([ROOF_TRIAD * xs[0] / 1e9, ROOF_GEMM / 1e9, ROOF_GEMM / 1e9])
    assert list(lines["conv3x3"].get_ydata()) == pytest.approx([ROOF_CONV / 1e9] * 2)
    sheet = lines["datasheet"]
    assert (
        sheet.get_linestyle() == ":" and sheet.get_label() == "datasheet (Synthetic sheet, table 2)"
    )
    assert list(sheet.get_xdata())[1] == pytest.approx(SHEET_GEMM / SHEET_TRIAD)
    assert list(sheet.get_ydata())[1:] == pytest.approx([SHEET_GEMM / 1e9] * 2)
    # every cell a point; marker area grows with the batch size
    (points,) = [c for c in ax.collections if len(c.get_offsets())]
    offsets = {(round(x, 9), round(y, 9)) for x, y in points.get_offsets()}
    assert offsets == {(round(i, 9), round(r / 1e9, 9)) for i, r in ROOFLINE_CELLS.values()}
    sizes = dict(zip([b for _, b in ROOFLINE_CELLS], points.get_sizes(), strict=True))
    assert sizes[8] > sizes[1]
    # one label per network, at its largest batch, none overlapping
    assert sorted(a.get_text() for a in result.labels) == ["near", "second", "slow", "stuck"]
    assert {tuple(a.xy) for a in result.labels} == {
        (i, r / 1e9) for (m, b), (i, r) in ROOFLINE_CELLS.items() if b == 8
    }
    result.fig.canvas.draw()
    _assert_no_overlap(list(result.labels))


def test_roofline_reading_names_the_networks_nearest_and_farthest(roofline_run: Path) -> None:
    reading = roofline(load_report_data([roofline_run])).reading
    near, far = _roofline_answer()
    assert [m for m, *_ in near] == ["near", "second"] and [m for m, *_ in far] == ["stuck", "slow"]
    assert (
        "the measured roofs are 100 GMAC/s (gemm) and 20 GB/s (triad), meeting at 5 MACs/byte"
        in reading
    )
    assert "a 3×3 convolution reaches 70 GMAC/s" in reading
    assert "the datasheet gives 200 GMAC/s and 50 GB/s (Synthetic sheet, table 2)" in reading
    expected_near = " and ".join(f"{m} ({_pct(f)} of it at batch {b})" for m, f, b in near)
    assert f"Nearest the compute roof: {expected_near}." in reading
    expected_far = " and ".join(
        f"{m} (at best {_pct(e)} of the roofline bound, at batch {b} and {i:.3g} MACs/byte)"
        for m, e, b, i in far
    )
    assert f"Farthest from both roofs: {expected_far}." in reading


def test_roofline_without_ceilings_draws_the_points_and_says_so(tmp_path: Path) -> None:
    result = roofline(load_report_data([make_roofline_run(tmp_path, ceilings=False)]))
    assert result.fig is not None
    assert not any(_lines_by_gid(ax) for ax in result.fig.axes)
    assert "no ceilings were measured" in result.reading
    # ranked by the rows' own compute_fraction where no roof was measured
    assert "Nearest the compute roof: near (90% of it at batch 8)" in result.reading


def test_roofs_are_matched_by_machine_where_ceilings_carry_no_run_id(roofline_run: Path) -> None:
    import dataclasses

    from bench.report.data import setup_roofs

    data = load_report_data([roofline_run])
    assert "run_id" in data.ceilings.columns
    (roofs,) = setup_roofs(data).values()
    assert (roofs.compute_macs_per_s, roofs.bandwidth_bytes_per_s) == (ROOF_GEMM, ROOF_TRIAD)
    assert roofs.ridge_macs_per_byte == pytest.approx(ROOF_GEMM / ROOF_TRIAD)
    assert roofs.bound_macs_per_s(2.0) == pytest.approx(2.0 * ROOF_TRIAD)
    no_ids = data.ceilings.drop(columns="run_id")
    (same,) = setup_roofs(dataclasses.replace(data, ceilings=no_ids)).values()
    assert same == roofs
    elsewhere = no_ids.assign(hostname="another-machine")
    (none,) = setup_roofs(dataclasses.replace(data, ceilings=elsewhere)).values()
    assert not none.measured and math.isnan(none.compute_macs_per_s)


def test_roofline_and_layer_figures_are_left_out_of_the_cpu_fixture(cpu_report: Path) -> None:
    doc = json.loads((cpu_report / "report.json").read_text())
    why = {f["name"]: f["why"] for f in doc["figures_left_out"]}
    assert "No cell has both an arithmetic intensity" in why[ROOFLINE_FIGURE]
    assert "effbench profile MODEL --out DIR" in why[LAYER_FIGURE]
    table = pd.read_csv(cpu_report / "summary.csv")
    assert "activation_peak_mib_bs1" not in table.columns  # no row counted it
    assert "compute_fraction_bs_max" not in table.columns


def test_memory_figure_draws_the_counted_memory_dashed_and_names_the_method(
    roofline_run: Path,
) -> None:
    data = load_report_data([roofline_run])
    result = memory_vs_batch(data)
    assert result.fig is not None
    (ax,) = result.fig.axes
    dashed = sorted(
        [float(v) for v in ln.get_ydata()] for ln in ax.get_lines() if ln.get_linestyle() == "--"
    )
    counted = [(WEIGHTS_BYTES + ACTIVATION_BYTES_PER_IMAGE * b) / 2**20 for b in (1, 8)]
    assert dashed == [pytest.approx(counted)] * 4  # one per network
    method = f"memory_method {CPU_MEMORY_METHOD}"
    assert method in result.reading and "held by PyTorch's CPU allocator" in result.reading
    assert "At batch 8 the measured peak is 2.00× the counted one." in result.reading
    assert method in memory_vs_params(data).reading


def test_memory_readings_say_which_figure_each_device_uses(multi_report: Path) -> None:
    doc = json.loads((multi_report / "report.json").read_text())
    readings = {f["name"]: f["reading"] for f in doc["figures"]}
    for name in (memory_vs_batch.name, memory_vs_params.name):
        assert "On AMD EPYC · float32 · 1 thr, peak memory is the resident set's" in readings[name]
        assert "· float16, peak memory is the CUDA caching allocator's" in readings[name]
        assert f"(memory_method {CUDA_MEMORY_METHOD})" in readings[name]


def test_summary_has_the_counted_memory_and_roofline_columns(roofline_run: Path) -> None:
    table = summary_table(load_report_data([roofline_run])).set_index("model")
    for (model, b), (intensity, rate) in ROOFLINE_CELLS.items():
        row = table.loc[model]
        if b == 1:
            assert row["activation_peak_mib_bs1"] == ACTIVATION_BYTES_PER_IMAGE / 2**20
            assert row["intensity_macs_per_byte_bs1"] == pytest.approx(intensity)
        else:  # the largest batch
            assert row["compute_fraction_bs_max"] == pytest.approx(rate / ROOF_GEMM)
            assert row["achieved_gmacs_per_s_max"] == pytest.approx(rate / 1e9)


# SYNTHETIC per-layer profile (made up): per group (time ms, MACs); the layers sum to 11 ms,
# the plain forward took 10 ms. An older profile of the same network and setup must be
# ignored, and a profile of another network at another batch size is a panel of its own.
PROFILE_GROUPS = {"conv": (5.0, 9.0e8), "depthwise conv": (3.0, 5.0e7), "norm": (1.5, 0.0),
                  "activation": (1.0, 0.0), "linear": (0.5, 5.0e7)}  # fmt: skip
PROFILE_FORWARD_MS = 10.0


def make_profiles(root: Path) -> Path:
    folder = root / "profiles"
    folder.mkdir(parents=True)
    latest = layer_rows("mnet", PROFILE_GROUPS, PROFILE_FORWARD_MS)
    older = layer_rows("mnet", {"conv": (1.0, 9.0e8), "norm": (9.0, 0.0)}, 9.0,
                       timestamp="2025-01-01T00:00:00+00:00")  # fmt: skip
    other = layer_rows("rnet", {"conv": (8.0, 1.0e9), "pool": (1.0, 0.0)}, 9.5, batch_size=4)
    for name, rows in (("latest", latest), ("older", older), ("other", other)):
        pd.DataFrame(rows).to_parquet(folder / f"profile-{name}.parquet")
    return folder


def test_layer_figure_reads_the_groups_whose_time_exceeds_their_macs(
    roofline_run: Path, tmp_path: Path
) -> None:
    data = load_report_data([roofline_run, make_profiles(tmp_path)])
    result = layer_types(data)
    assert result.fig is not None and result.skipped is None
    assert [ax.get_title() for ax in result.fig.axes] == [
        "mnet · batch 1\ncpu · float32 · 1 thr",
        "rnet · batch 4\ncpu · float32 · 1 thr",
    ]
    total_t = sum(t for t, _ in PROFILE_GROUPS.values())
    total_m = sum(m for _, m in PROFILE_GROUPS.values())
    share = {g: (t / total_t, m / total_m) for g, (t, m) in PROFILE_GROUPS.items()}
    excess = sorted(share, key=lambda g: share[g][1] - share[g][0])[:2]
    assert excess == ["depthwise conv", "norm"]
    expected = "; ".join(
        f"{g} layers take {_pct(share[g][0])} of the layer time for {_pct(share[g][1])} of the MACs"
        for g in excess
    )
    assert f"mnet on cpu · float32 · 1 thr, batch 1: {expected};" in result.reading
    assert (
        f"the layers add up to {total_t:.3g} ms against {PROFILE_FORWARD_MS:.3g} ms for the plain "
        f"forward ({total_t / PROFILE_FORWARD_MS:.2f}×)." in result.reading
    )
    # the bars: time share then MAC share per group, in percent, groups in the fixed order
    mnet = result.fig.axes[0]
    widths = [round(p.get_width(), 9) for p in mnet.patches]
    groups = ["conv", "depthwise conv", "linear", "norm", "activation"]
    assert [t.get_text() for t in mnet.get_yticklabels()] == groups
    assert widths[: len(groups)] == [round(100 * share[g][0], 9) for g in groups]
    assert widths[len(groups) :] == [round(100 * share[g][1], 9) for g in groups]


def test_layer_figure_is_left_out_without_a_profile(roofline_run: Path) -> None:
    result = layer_types(load_report_data([roofline_run]))
    assert result.fig is None and result.skipped is not None
    assert "No per-layer profile was given" in result.skipped


def test_roofline_and_layer_figures_are_byte_identical_across_builds(
    roofline_run: Path, tmp_path: Path
) -> None:
    inputs = [roofline_run, make_profiles(tmp_path / "in")]
    a = build_report(inputs, tmp_path / "a")
    b = build_report(inputs, tmp_path / "b")
    drawn = {f.name for f in a.figures if not f.skipped}
    assert {ROOFLINE_FIGURE, LAYER_FIGURE} <= drawn
    (roofs,) = json.loads((a.out / "report.json").read_text())["roofs"]
    assert roofs == {
        "setup": "cpu · float32 · 1 thr",
        "compute_macs_per_s": ROOF_GEMM,
        "bandwidth_bytes_per_s": ROOF_TRIAD,
        "ridge_macs_per_byte": ROOF_GEMM / ROOF_TRIAD,
        "conv3x3_macs_per_s": ROOF_CONV,
        "datasheet_compute_macs_per_s": SHEET_GEMM,
        "datasheet_bandwidth_bytes_per_s": SHEET_TRIAD,
        "datasheet_citation": "Synthetic sheet, table 2",
    }
    for rel in sorted(p.relative_to(a.out) for p in a.files):
        assert (a.out / rel).read_bytes() == (b.out / rel).read_bytes(), rel


# --------------------------------------------------------------------------- verdicts

# SYNTHETIC run with verdicts (made up, never measured): per (network, batch) the verdict
# the runner wrote, its reason and the achieved rate (MACs/s). Its ceilings were measured
# twice: at the start, on a busier machine, at half the closing values. "c" is clean by
# its row but above the closing GEMM roof: the report must call it implausible.
HOSTILE = "<b>x</b>&y"
QUALITY_GEMM = {"start": 50e9, "end": 100e9}
QUALITY_TRIAD = {"start": 10e9, "end": 20e9}
QUALITY_CI = 0.02
QUALITY_CELLS: dict[tuple[str, int], tuple[str, str, float]] = {
    ("a", 1): ("clean", "no sign of contention; precision target met", 20e9),
    ("a", 2): ("contended", "its threads waited for a CPU 30% of the window", 5e9),
    ("b", 1): ("noisy", "the median's 95% CI is ±3.0% after 10 samples", 30e9),
    ("b", 2): ("clean", "no sign of contention; precision target met", 60e9),
    ("c", 1): ("clean", "no sign of contention; precision target met", 150e9),
    (HOSTILE, 1): ("contended", "other processes kept 1.50 cores of its CPUs busy", 10e9),
}
QUALITY_INTENSITY = 50.0  # MACs per byte: right of the ridge (5), under the compute roof
# What the report must conclude: the cells it cannot trust, and the counts of every verdict.
UNTRUSTED_CELLS = {("a", 2, "contended"), ("c", 1, "implausible"), (HOSTILE, 1, "contended")}
QUALITY_COUNTS = {"clean": 2, "noisy": 1, "implausible": 1, "contended": 2}


def write_run(
    root: Path, run_id: str, rows: list[Row], ceilings: list[dict[str, Any]] | None = None,
    **manifest: Any,
) -> Path:  # fmt: skip
    """A run folder of ``rows`` (each its own part) with a manifest, and its ceilings."""
    run = root / run_id
    run.mkdir(parents=True)
    write_manifest(run, {"run_id": run_id, "environment": {"hostname": "box"}, **manifest})
    for i, row in enumerate(rows):
        write_row(run, f"part{i}", row)
    if ceilings:
        pd.DataFrame(ceilings).to_parquet(run / "ceilings.parquet")
    return run


def quality_row(model: str, b: int, quality: str, reason: str, rate: float, **kw: Any) -> Row:
    """A SYNTHETIC ok row with a verdict, timed so that it reaches ``rate`` MACs/s."""
    latency = ROOFLINE_MACS * b / rate * 1e3
    values: dict[str, Any] = dict(
        run_id="quality", macs=ROOFLINE_MACS, params=10**6, weights_bytes=4 * 10**6,
        latency_ms_median=latency, time_per_image_ms=latency / b,
        throughput_ips=b * 1e3 / latency, achieved_macs_per_s=rate,
        bytes_per_image=ROOFLINE_MACS / QUALITY_INTENSITY,
        intensity_macs_per_byte=QUALITY_INTENSITY, peak_memory_bytes=10**7 * b,
        top1=70.0 + len(model), power_w_mean=50.0 + b, power_source="synthetic",
        energy_per_image_j=(50.0 + b) * latency / b / 1e3, quality=quality,
        quality_reason=reason,
    )  # fmt: skip
    values.update(kw)
    return make_row(model, b, **values)


def quality_ceilings() -> list[dict[str, Any]]:
    rows = []
    for phase in ("start", "end"):
        for r in ceiling_rows("cpu", "float32", 1, "box", gemm=QUALITY_GEMM[phase],
                              triad=QUALITY_TRIAD[phase]):  # fmt: skip
            rows.append({**r, "phase": phase, "ci_rel": QUALITY_CI})
    return rows


def make_quality_run(root: Path, quiet: bool = False) -> Path:
    """The SYNTHETIC run of QUALITY_CELLS; ``quiet``: only its clean and noisy cells, under
    the closing roof (a run that must get no banner)."""
    rows = [
        quality_row(m, b, q, why, rate)
        for (m, b), (q, why, rate) in QUALITY_CELLS.items()
        if not quiet or (q in ("clean", "noisy") and m != "c")
    ]
    return write_run(root, "quality-quiet" if quiet else "quality", rows, quality_ceilings())


@pytest.fixture(scope="module")
def quality_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_quality_run(tmp_path_factory.mktemp("quality"))


def _texts(data: Any) -> tuple[str, str, dict[str, Any]]:
    """index.html, summary.md and report.json of ``data`` without drawing the figures."""
    from bench.report.page import index_html, report_json
    from bench.report.summary import summary_markdown

    table = summary_table(data)
    return (
        index_html(data, table, [], {}),
        summary_markdown(data, table, []),
        json.loads(report_json(data, [], {})),
    )


def test_cells_take_the_worst_verdict_and_implausible_above_the_highest_roof(
    quality_run: Path,
) -> None:
    data = load_report_data([quality_run])
    got = {(r.model, int(r.batch_size)): r.quality for r in data.cells.itertuples()}
    expected = {k: q for k, (q, _, _) in QUALITY_CELLS.items()}
    expected[("c", 1)] = "implausible"  # above 100 GMAC/s ±2%, the closing (highest) roof
    assert got == expected
    c = data.cells.set_index("model").loc["c"]
    assert "above the measured gemm roof 100.0 GMAC/s ±2.0%" in c["quality_reason"]
    # b at batch 2 is 60% of the closing roof, though 120% of the busier start's
    assert data.cells.set_index(["model", "batch_size"]).loc[("b", 2), "roof_fraction"] == (
        pytest.approx(60e9 / QUALITY_GEMM["end"])
    )


def test_banner_counts_the_verdicts_and_lists_the_untrusted_cells_escaped(
    quality_run: Path,
) -> None:
    page, md, doc = _texts(load_report_data([quality_run]))
    banner = re.search(r'<section class="banner" id="quality-banner".*?</section>', page, re.S)
    assert banner, "no banner"
    # at the top: before the lead paragraph and the summary
    assert page.index('id="quality-banner"') < page.index('class="lead"')
    text = banner.group(0)
    assert "Of 6 measured cells: 2 clean, 1 noisy, 1 implausible, 2 contended." in text
    items = re.findall(r"<li>(.*?)</li>", text)
    assert len(items) == len(UNTRUSTED_CELLS)
    assert items[0].startswith("&lt;b&gt;x&lt;/b&gt;&amp;y at batch 1 on cpu · float32 · 1 thr")
    assert HOSTILE not in page  # escaped everywhere
    assert "its threads waited for a CPU 30% of the window" in items[1]
    assert "docs/noise.md" in text and "--remeasure" in text and "effbench peak" in text
    assert "**3 cell(s) cannot be trusted (contended or implausible)." in md
    assert doc["quality"]["counts"] == QUALITY_COUNTS
    listed = {
        (c["model"], c["batch_size"], c["quality"]) for c in doc["quality"]["untrusted_cells"]
    }
    assert listed == UNTRUSTED_CELLS


def test_quiet_run_gets_no_banner_only_a_line_of_its_noisy_share(tmp_path: Path) -> None:
    page, md, doc = _texts(load_report_data([make_quality_run(tmp_path, quiet=True)]))
    assert 'id="quality-banner"' not in page and "cannot be trusted" not in md
    note = re.search(r'<p class="lead quality-note" id="quality-note">(.*?)</p>', page)
    assert note and "2 clean, 1 noisy cells" in note.group(1)
    assert "1 of 3 (33%) are noisy" in note.group(1)
    assert doc["quality"]["untrusted_cells"] == []


def test_a_run_without_verdicts_gets_neither_banner_nor_note(cpu_report: Path) -> None:
    page = (cpu_report / "index.html").read_text()
    assert 'id="quality-banner"' not in page and 'id="quality-note"' not in page
    assert "quality" not in pd.read_csv(cpu_report / "summary.csv").columns


def test_summary_has_a_quality_column_and_no_fraction_above_the_roof(quality_run: Path) -> None:
    table = summary_table(load_report_data([quality_run])).set_index("model")
    assert table.loc["a", "quality"] == "contended at batch 2"
    assert table.loc["b", "quality"] == "noisy at batch 1"
    assert table.loc["c", "quality"] == "implausible at batch 1"
    assert table.loc[HOSTILE, "quality"] == "contended at batch 1"
    assert table.loc["b", "compute_fraction_bs_max"] == pytest.approx(0.6)
    assert math.isnan(table.loc["c", "compute_fraction_bs_max"])  # 150% is not a fraction
    assert (table["compute_fraction_bs_max"].dropna() <= 1).all()


def test_wide_iqr_cells_count_the_iqr_flag_not_the_noisy_verdict(tmp_path: Path) -> None:
    """Both batches missed the precision target (verdict ``noisy``); only batch 2's IQR is
    above 10% of its median (the ``noisy`` column): the summary must not say 2 and 1 of one
    word, as it did when this column was headed "noisy cells"."""
    why = "the median's 95% CI is ±3% after 40 samples, not the ±1% target"
    rows = [
        quality_row("m", 1, "noisy", why, 40e9, latency_ms_iqr=0.01, noisy=False),
        quality_row("m", 2, "noisy", why, 40e9, latency_ms_iqr=9.0, noisy=True),
    ]
    table = summary_table(load_report_data([write_run(tmp_path, "iqr", rows)]))
    cell = table.set_index("model").loc["m"]
    assert cell["quality"] == "noisy at batch 1, 2"
    assert cell["wide_iqr_cells"] == 1
    from bench.report.summary import SUMMARY_COLUMNS

    heading = {c.key: c.heading for c in SUMMARY_COLUMNS}["wide_iqr_cells"]
    assert "noisy" not in heading and "IQR" in heading


def _hollow_points(fig: Any) -> tuple[int, int]:
    """(hollow, filled) markers of every scatter of ``fig`` (a transparent face is hollow)."""
    hollow = filled = 0
    for ax in fig.axes:
        for c in ax.collections:
            if isinstance(c, PathCollection) and len(c.get_offsets()):
                alpha = c.get_facecolors()[:, 3]
                hollow += int((alpha == 0).sum())
                filled += int((alpha > 0).sum())
    return hollow, filled


def _legend_labels(fig: Any) -> list[str]:
    return [t.get_text() for leg in fig.legends for t in leg.get_texts()]


@pytest.mark.parametrize(
    ("slug", "cells"),
    [("time-per-image", None), ("power", None), ("memory", None), ("memory-vs-params", 1),
     ("ops-vs-time", "1+2"), ("roofline", None)],
)  # fmt: skip
def test_untrusted_cells_are_drawn_hollow_and_named(
    quality_run: Path, slug: str, cells: Any
) -> None:
    data = load_report_data([quality_run])
    result = figure(slug)(data)
    assert result.fig is not None
    drawn = {k: q for k, (q, _, _) in QUALITY_CELLS.items()}
    drawn[("c", 1)] = "implausible"
    if cells == 1:  # batch 1 only
        drawn = {k: q for k, q in drawn.items() if k[1] == 1}
    hollow = sum(q in ("contended", "implausible") for q in drawn.values())
    assert _hollow_points(result.fig) == (hollow, len(drawn) - hollow)
    if slug not in ("memory-vs-params", "ops-vs-time"):
        assert HOLLOW_LABEL in _legend_labels(result.fig)
    if slug != "roofline":  # the roofline names implausible points its own way
        assert "Hollow markers are cells whose number cannot be trusted" in result.reading
        named = re.findall(r"(\S+) at batch (\d) \((contended|implausible)\)", result.reading)
        assert {(m, int(b), q) for m, b, q in named} == {
            (m, b, q) for (m, b), q in drawn.items() if q in ("contended", "implausible")
        }


def test_best_point_figures_draw_hollow_where_the_best_cell_is_untrusted(quality_run: Path):
    data = load_report_data([quality_run])
    # one point per network: a's best throughput is batch 1 (clean), c's its only cell
    for make in (accuracy_vs_throughput, energy_vs_accuracy):
        result = make(data)
        assert result.fig is not None
        assert _hollow_points(result.fig) == (2, 2)  # c (implausible) and HOSTILE (contended)
        assert "c at batch 1 (implausible)" in result.reading


def test_roofline_uses_the_highest_ceilings_and_never_reads_a_rate_above_as_a_fraction(
    quality_run: Path,
) -> None:
    from bench.report.data import setup_roofs

    data = load_report_data([quality_run])
    (roofs,) = setup_roofs(data).values()
    assert (roofs.compute_macs_per_s, roofs.bandwidth_bytes_per_s) == (100e9, 20e9)
    assert roofs.compute_ci_rel == QUALITY_CI
    assert [(d.kind, d.start, d.end) for d in roofs.drift] == [
        ("gemm", 50e9, 100e9), ("triad", 10e9, 20e9)
    ]  # fmt: skip
    reading = roofline(data).reading
    assert (
        "Measured twice, the gemm ceiling read 50 GMAC/s at the run's start and 100 GMAC/s at "
        "its end (+100%) and the triad ceiling read 10 GB/s at the run's start and 20 GB/s at "
        "its end (+100%); the higher of each is drawn" in reading
    )
    assert "Nearest the compute roof: b (60% of it at batch 2) and a (20% of it at batch 1)." in (
        reading
    )
    assert (
        "Above the measured compute roof (100 GMAC/s ±2.0%), so implausible and drawn hollow, "
        "not read as a fraction of it: c at batch 1 (150 GMAC/s)." in reading
    )
    fractions = [float(v) for v in re.findall(r"(\d+(?:\.\d+)?)% of", reading)]
    assert fractions and max(fractions) <= 100


def test_a_row_judged_implausible_by_its_run_is_never_a_percentage(tmp_path: Path) -> None:
    # no ceilings in the report's input: the rows' own compute_fraction (2.5 = 250%)
    row = quality_row("z", 1, "implausible", "above its run's roof", 250e9,
                      compute_fraction=2.5)  # fmt: skip
    other = quality_row("y", 1, "clean", "ok", 50e9, compute_fraction=0.5)
    data = load_report_data([write_run(tmp_path, "nroof", [row, other])])
    reading = roofline(data).reading
    assert "250%" not in reading and "Nearest the compute roof: y (50% of it at batch 1)." in (
        reading
    )
    assert "Above the compute roof their run measured, so implausible" in reading
    assert math.isnan(summary_table(data).set_index("model").loc["z", "compute_fraction_bs_max"])


def test_speedups_are_hollow_where_either_cell_is_contended(tmp_path: Path) -> None:
    rows = [
        _timed("m", 1, 4.0, 0, quality="contended", quality_reason="waited"),
        _timed("m", 1, 2.0, 0, config="compile", quality="clean"),
        _timed("m", 2, 4.0, 0, quality="clean"),
        _timed("m", 2, 2.0, 0, config="compile", quality="noisy"),
    ]
    result = speedup_vs_eager(load_report_data([write_run(tmp_path, "sp", rows)]))
    assert result.fig is not None
    assert _hollow_points(result.fig) == (1, 1)
    assert HOLLOW_LABEL in _legend_labels(result.fig)
    assert "m compile at batch 1 (contended)" in result.reading


def test_the_report_reads_the_best_attempt_of_each_cell(tmp_path: Path) -> None:
    rows = [
        _timed("m", 1, 9.0, 0, attempt=0, quality="contended", quality_reason="waited"),
        _timed("m", 1, 2.0, 0, attempt=1, quality="clean"),
        _timed("m", 1, 5.0, 0, attempt=2, quality="contended", quality_reason="waited"),
    ]
    data = load_report_data([write_run(tmp_path, "again", rows)])
    (cell,) = data.cells.itertuples()
    assert (cell.latency_ms_median, cell.quality, cell.n_repeats) == (2.0, "clean", 1)
    assert data.attempts_not_kept == 2
    page, _, _ = _texts(data)
    assert "2 earlier attempt(s) of re-measured cells are not shown" in page


# --------------------------------------------------------------------------- arms and runs


def test_the_arms_of_an_ab_run_are_setups_never_pooled_repeats(tmp_path: Path) -> None:
    # an A/B run: two run folders whose manifests name the arm; the "base" arm's rows carry
    # the variant, the "tuned" arm's rows lack it (written before the column, under row
    # contract version 1) and get it from their manifest
    latencies = {"base": (10.0, 12.0), "tuned": (4.0, 6.0)}
    runs = []
    for arm, lats in latencies.items():
        old = {} if arm == "base" else {"variant": None, "schema_version": 1}
        rows = [_timed("m", 1, lat, r, run_id=f"ab-{arm}", timestamp=f"2026-01-01T00:00:0{r}",
                       **{"variant": arm, **old})
                for r, lat in enumerate(lats)]  # fmt: skip
        runs.append(write_run(tmp_path, f"ab-{arm}", rows, options={"variant": arm}))
    data = load_report_data(runs)
    assert data.setups == ("cpu · float32 · 1 thr · arm base", "cpu · float32 · 1 thr · arm tuned")
    cells = data.cells.set_index("setup")
    for arm, lats in latencies.items():
        cell = cells.loc[f"cpu · float32 · 1 thr · arm {arm}"]
        assert cell["n_repeats"] == 2 and cell["latency_ms_median"] == statistics.median(lats)
    assert data.superseded == ()  # arms are not older runs of one another
    assert any("lack variant: named from the run's manifest" in n for n in data.notes)
    table = summary_table(data)
    assert sorted(table["setup"]) == list(data.setups) and (table["repeats_max"] == 2).all()


def test_older_runs_of_a_cell_are_superseded_not_pooled(tmp_path: Path) -> None:
    old = write_run(tmp_path, "monday", [
        _timed("m", 1, 9.0, 0, run_id="monday", timestamp="2026-01-05T10:00:00+00:00"),
        _timed("m", 1, 9.5, 1, run_id="monday", timestamp="2026-01-05T10:00:01+00:00"),
        _timed("m", 2, 7.0, 0, run_id="monday", timestamp="2026-01-05T10:00:02+00:00"),
    ])  # fmt: skip
    new = write_run(tmp_path, "tuesday", [
        _timed("m", 1, 3.0, 0, run_id="tuesday", timestamp="2026-01-06T10:00:00+00:00"),
    ])  # fmt: skip
    data = load_report_data([new, old])
    cells = data.cells.set_index("batch_size")
    assert (cells.loc[1, "latency_ms_median"], cells.loc[1, "n_repeats"]) == (3.0, 1)
    assert cells.loc[2, "latency_ms_median"] == 7.0  # only monday measured batch 2
    assert data.superseded == (Superseded("monday", cells=1, rows=2, by=("tuesday",)),)
    page, md, doc = _texts(data)
    assert re.search(r'<p class="lead" id="superseded">Older runs not shown: monday \(1 cell\(s\), '
                     r"2 row\(s\); measured again by tuesday\)", page)  # fmt: skip
    assert "Older runs not shown: monday" in md
    assert doc["quality"]["superseded_runs"] == [
        {"run_id": "monday", "cells": 1, "rows": 2, "by": ["tuesday"]}
    ]
