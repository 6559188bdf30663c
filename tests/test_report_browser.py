"""The report page in a real browser: headless Chromium (Debian: `apt-get install -y
chromium`) loads ``index.html`` from disk; the page's own script writes how many images
loaded into ``#image-check``, which ``--dump-dom`` returns; a screenshot is taken too.
Skipped where Chromium is not installed.

Three inputs: the committed CPU fixture, the SYNTHETIC multi-device runs of
``test_report``, and a real CPU sweep made here (two networks, batch sizes 1 and 2, with
the device ceilings) plus a real per-layer profile (``effbench profile``), so that the
roofline and layer-type figures of a real measurement are drawn and load. And the quality
banner (issue 20): the SYNTHETIC run of ``test_report.make_quality_run`` (rows written with
their verdicts, deterministic, no real load) carries it, its quiet variant (clean and
noisy cells only) does not."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import (
    FIXTURE,
    HOSTILE,
    make_config_run,
    make_quality_run,
    make_synthetic_runs,
    png_size,
)

from bench.cli import main
from bench.report import build_report
from bench.report.data import load_report_data
from bench.report.figures import figure
from bench.report.page import index_html
from bench.report.summary import summary_table

CHROMIUM = next(
    (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None
)
pytestmark = [
    pytest.mark.system,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no Chromium on PATH (Debian: apt-get install -y chromium)"
    ),
]
# Where to leave the screenshot for a person to look at (e.g. in CI artifacts).
SCREENSHOT_DIR_ENV = "EFFBENCH_SCREENSHOT_DIR"


def _chromium(profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=10000",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _images_loaded(dom: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    """(images loaded, images) as the page's own script counted them in the browser."""
    match = re.search(r'id="image-check"[^>]*>', dom.stdout)
    assert match, f"no image check in the DOM; chromium said: {dom.stderr[-2000:]}"
    loaded = re.search(r'data-loaded="(\d+)"', match.group(0))
    total = re.search(r'data-total="(\d+)"', match.group(0))
    assert loaded and total, match.group(0)
    return int(loaded.group(1)), int(total.group(1))


SWEEP_MODELS = ("squeezenet1_1", "tiny_mlp")
NEW_FIGURES = {figure("roofline").name, figure("layer-types").name}


def real_sweep(root: Path) -> list[Path]:
    """A real CPU sweep with ceilings (a few seconds of measuring) and a real profile."""
    run = ["run", "--models", ",".join(SWEEP_MODELS), "--batch-sizes", "1,2",
           "--min-time", "0.05", "--max-time", "0.2", "--threads", "1", "--ceilings",
           "--out", str(root), "--run-id", "sweep"]  # fmt: skip
    assert main(run) == 0
    profile = ["profile", SWEEP_MODELS[0], "--threads", "1", "--no-ceilings",
               "--out", str(root / "profiles")]  # fmt: skip
    assert main(profile) == 0
    return [root / "sweep", root / "profiles"]


def _inputs(which: str, root: Path) -> list[Path]:
    if which == "cpu":
        return [FIXTURE]
    return make_synthetic_runs(root) if which == "multi" else real_sweep(root)


@pytest.mark.parametrize("which", ["cpu", "multi", "sweep"])
def test_every_image_loads_in_chromium(tmp_path: Path, which: str) -> None:
    report = build_report(_inputs(which, tmp_path / "runs"), tmp_path / "report")
    doc = json.loads((report.out / "report.json").read_text())
    n_figures = len(doc["figures"])
    if which != "cpu":  # the committed fixture predates the roofline columns
        assert {f["name"] for f in doc["figures"]} >= NEW_FIGURES, doc["figures_left_out"]
    page = (report.out / "index.html").resolve().as_uri()

    shot = tmp_path / "screenshot.png"  # one launch: the DOM on stdout, the screenshot
    dom = _chromium(tmp_path / "profile", "--dump-dom", f"--screenshot={shot}",
                    "--window-size=1366,2400", page)  # fmt: skip
    assert _images_loaded(dom) == (n_figures, n_figures)
    assert shot.is_file(), "chromium wrote no screenshot"
    assert png_size(shot) == (1366, 2400)
    assert shot.stat().st_size > 50_000  # a blank page compresses to a few kilobytes
    keep = os.environ.get(SCREENSHOT_DIR_ENV)
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / f"report-{which}.png")


@pytest.mark.parametrize("which", ["contended", "quiet"])
def test_a_contended_run_carries_the_banner_and_a_quiet_one_does_not(
    tmp_path: Path, which: str
) -> None:
    run = make_quality_run(tmp_path / "runs", quiet=which == "quiet")
    report = build_report([run], tmp_path / "report")
    n_figures = len(json.loads((report.out / "report.json").read_text())["figures"])
    dom = _chromium(tmp_path / "profile", "--dump-dom", (report.out / "index.html").as_uri())
    assert _images_loaded(dom) == (n_figures, n_figures)
    body = dom.stdout
    banner = re.search(r'<section class="banner" id="quality-banner"[^>]*>(.*?)</section>',
                       body, re.S)  # fmt: skip
    if which == "quiet":
        assert banner is None and "cannot be trusted" not in body
        assert re.search(r'id="quality-note"[^>]*>Quality: 2 clean, 1 noisy cells', body)
        return
    assert banner, "no banner in the DOM"
    # the first thing under the title, before the lead paragraph and the summary
    assert re.search(r"<h1>Efficiency report</h1>\s*<section class=\"banner\"", body)
    text = banner.group(1)
    assert "3 cell(s) cannot be trusted" in text and "Of 6 measured cells" in text
    assert len(re.findall(r"<li>", text)) == 3
    # the hostile network name is text in the browser, never markup
    assert "&lt;b&gt;x&lt;/b&gt;&amp;y at batch 1" in text and HOSTILE not in body
    assert "docs/noise.md" in text


def _layout(dom: subprocess.CompletedProcess[str]) -> tuple[int, int, int]:
    """(viewport width, summary tables, those wider than the page) as the page's own script
    measured them in the browser, each table with its "More columns" open."""
    match = re.search(r'id="layout-check"[^>]*>', dom.stdout)
    assert match, f"no layout check in the DOM; chromium said: {dom.stderr[-2000:]}"
    found = [
        re.search(rf'data-{k}="(\d+)"', match.group(0)) for k in ("viewport", "tables", "wide")
    ]
    assert all(found), match.group(0)
    return tuple(int(m.group(1)) for m in found)  # type: ignore[union-attr,return-value]


@pytest.mark.parametrize("which", ["cpu", "multi", "configs", "quality"])
def test_the_summary_fits_a_1280_pixel_screen(tmp_path: Path, which: str) -> None:
    """Issue 23: 14 of 22 columns needed sideways scrolling. The page alone (no figures)
    of each input, at 1280 pixels, then at 700 (where a wide table must be found: the
    measurement itself can fail)."""
    inputs = {"cpu": lambda: [FIXTURE], "multi": lambda: make_synthetic_runs(tmp_path / "runs"),
              "configs": lambda: [make_config_run(tmp_path)],
              "quality": lambda: [make_quality_run(tmp_path / "runs")]}[which]()  # fmt: skip
    data = load_report_data(inputs)
    page = tmp_path / "index.html"
    page.write_text(index_html(data, summary_table(data), [], {}), encoding="utf-8")
    wide = _chromium(tmp_path / "profile", "--window-size=1280,900", "--dump-dom", page.as_uri())
    viewport, tables, too_wide = _layout(wide)
    assert viewport == 1280 and tables >= 2 and too_wide == 0
    narrow = _chromium(tmp_path / "profile", "--window-size=700,900", "--dump-dom", page.as_uri())
    assert _layout(narrow)[2] > 0
