"""Configurations as a sweep axis (issue 13): parsing, the plan's refusals, and real CPU
rows for eager, channels_last, compile and autocast on a tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import FAST, effbench

from bench import load_results
from bench.configs import TOLERANCE, Config, check_config, parse_config
from bench.errors import InvalidOption
from bench.plan import Inventory, ModelShape, Options, expand_plan

CPU = Inventory({"cpu": frozenset({"float32", "bfloat16"})}, default_threads=1)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("eager", "eager"),
        ("compile", "compile"),
        ("compile+channels_last", "channels_last+compile"),
        ("autocast+channels_last", "channels_last+autocast"),
        ("compile:inductor", "compile"),
        ("compile:aot_eager+autocast", "autocast+compile:aot_eager"),
        ("cudagraphs", "cudagraphs"),
        ("compile-max-autotune", "compile-max-autotune"),
    ],
)
def test_configurations_have_one_canonical_name(text: str, name: str) -> None:
    assert parse_config(text).name == name
    assert parse_config(name) == parse_config(text)  # the name parses back to itself


def test_compile_modes_follow_the_configuration() -> None:
    assert parse_config("compile").mode is None
    assert parse_config("compile-max-autotune").mode == "max-autotune"
    assert parse_config("cudagraphs").mode == "reduce-overhead"
    assert parse_config("compile:aot_eager").backend == "aot_eager"
    assert not Config().compiled and parse_config("cudagraphs").compiled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty part"),
        ("compile+", "empty part"),
        ("eager+compile", "no other part"),
        ("compile+cudagraphs", "one compiler part"),
        ("compile+compile", "twice"),
        ("fast", "unknown configuration part"),
        ("channels_last:x", "unknown configuration part"),
        ("compile:../x", "backend is a name"),
    ],
)
def test_malformed_configurations_say_what_to_write(text: str, message: str) -> None:
    with pytest.raises(InvalidOption, match=message):
        parse_config(text)


def test_impossible_combinations_fail_in_the_plan() -> None:
    catalog = {"m": ModelShape(8)}
    with pytest.raises(InvalidOption, match="CUDA graphs"):
        expand_plan(Options(models=("m",), configs=("cudagraphs",)), catalog, CPU)
    with pytest.raises(InvalidOption, match="float32"):
        expand_plan(Options(models=("m",), configs=("autocast",)), catalog, CPU)
    with pytest.raises(InvalidOption, match="unknown configuration"):
        expand_plan(Options(models=("m",), configs=("eager", "turbo")), catalog, CPU)
    check_config(parse_config("autocast"), "cpu", "bfloat16")  # possible: no error


def test_configurations_are_an_axis_of_the_plan_and_of_the_cell_identity() -> None:
    opts = Options(models=("m",), batch_sizes=(1, 2), configs=("compile+channels_last", "eager"))
    groups = expand_plan(opts, {"m": ModelShape(8)}, CPU)
    assert [g.config for g in groups] == ["channels_last+compile", "eager"]
    keys = {c.key for g in groups for c in g.cells()}
    assert len(keys) == 4 and {k.cell.config for k in keys} == {"eager", "channels_last+compile"}


def test_impossible_config_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    r = effbench(["run", "--models", "tiny_mlp", "--configs", "cudagraphs", "--out", str(tmp_path)])
    assert r.returncode == 2 and "CUDA graphs" in r.stderr
    assert not any(tmp_path.iterdir())


@pytest.fixture(scope="module")
def config_rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """lenet5 on the CPU in four configurations, bfloat16 (autocast needs a half dtype), one
    thread: at all cores a busy neighbour (another test) stalls every parallel region, and a
    1 ms forward read 157-331 ms (docs/noise.md), longer than a cached compile."""
    out = tmp_path_factory.mktemp("configs")
    configs = "eager,channels_last,compile,autocast"
    args = ["run", "--models", "lenet5", "--batch-sizes", "1,2", "--dtypes", "bfloat16"]
    args += ["--threads", "1"]
    r = effbench([*args, "--configs", configs, *FAST, "--out", str(out), "--run-id", "c"])
    assert r.returncode == 0, r.stderr
    return load_results([out / "c"])


def test_every_configuration_gives_ok_rows_with_correct_output(config_rows: pd.DataFrame) -> None:
    df = config_rows
    assert sorted(set(df["config"])) == ["autocast", "channels_last", "compile", "eager"]
    assert len(df) == 8 and set(df["status"]) == {"ok"}
    assert df["output_ok"].all()
    # the check is real: bfloat16 differs from float32, within the stated tolerance
    assert (df["max_rel_err"] > 0).all()
    assert (df["max_rel_err"] <= TOLERANCE["bfloat16"]).all()


def test_compile_time_is_filled_only_for_compiled_configurations(config_rows: pd.DataFrame) -> None:
    df = config_rows
    compiled = df["config"] == "compile"
    assert (df.loc[compiled, "compile_s"] > 0).all()
    assert df.loc[~compiled, "compile_s"].isna().all()
    assert (df.loc[compiled, "graph_breaks"] == 0).all()
    assert not df.loc[compiled, "recompiled"].astype(bool).any()
    # compile time never counts in the latency: the timed samples are single forwards
    assert (df.loc[compiled, "latency_ms_median"] * 1e-3 < df.loc[compiled, "compile_s"]).all()


def test_autocast_keeps_float32_weights_while_casting_compute(config_rows: pd.DataFrame) -> None:
    df = config_rows.set_index(["config", "batch_size"])
    # LeNet-5's 60,000 parameters (seed notes): 4 bytes each under autocast (float32
    # weights), 2 when the model is cast to bfloat16; buffers come on top of both
    params = 60_000
    assert df.loc[("autocast", 1), "params"] == df.loc[("eager", 1), "params"] == params
    assert 4 * params <= df.loc[("autocast", 1), "weights_bytes"] < 4 * params + 8_000
    assert 2 * params <= df.loc[("eager", 1), "weights_bytes"] < 2 * params + 8_000


def test_a_failing_compiler_is_an_error_row_and_the_sweep_goes_on(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["EFFBENCH_PLUGINS"] = "effbench_test_models,effbench_broken_backend"
    args = ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2"]
    args += ["--configs", "compile:effbench_broken,eager", *FAST, "--out", str(tmp_path)]
    r = effbench([*args, "--run-id", "b"], env=env)
    assert r.returncode == 0, r.stderr
    df = load_results([tmp_path / "b"]).set_index(["config", "batch_size"])
    broken = df.loc[("compile:effbench_broken", 1)]
    assert broken["status"] == "error"
    assert "simulated compiler failure" in broken["error"]
    assert df.loc[("compile:effbench_broken", 2), "status"] == "skipped"
    assert set(df.loc["eager", "status"]) == {"ok"}
