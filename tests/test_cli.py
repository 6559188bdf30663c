"""Bad input: a one-line error that says what to do, exit code 2, nothing lost."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

import pytest
from conftest import FAST, effbench

from bench.cli import main


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["run", "--models", "resnet5O"], "did you mean 'resnet50'"),
        (["run", "--suite", "canzani"], "did you mean 'canziani'"),
        (["run", "--models", "resnet18", "--batch-sizes", "0"], "batch size 0"),
        (["run", "--models", "resnet18", "--batch-sizes", "-4"], "batch size -4"),
        (["run", "--models", "resnet18", "--batch-sizes", "two"], "comma list"),
        (["run", "--models", "resnet18", "--dtypes", "float8"], "unknown dtype 'float8'"),
        (["run", "--models", "resnet18", "--devices", "cuda"], "no CUDA GPU is visible"),
        (["run", "--models", "resnet18", "--devices", "cuda:7"], "not present"),
        (["run", "--models", "resnet18", "--memory-cap", "lots"], "512MiB"),
        (["inspect", "nope"], "unknown model 'nope'"),
        (["show", "/nonexistent/run"], "does not exist"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_clear_line_and_exit_2(
    args: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("effbench: error: ")
    assert match in err
    assert len(err.splitlines()) == 1


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["run", "--models", "tiny_mlp", "--out", str(blocker / "results")]) == 2
    assert "cannot write results" in capsys.readouterr().err


def test_corrupt_parquet_is_named_and_nothing_is_lost(out_dir: Path) -> None:
    r = effbench(
        ["run", "--models", "tiny_mlp", "--batch-sizes", "1,2", "--out", str(out_dir)]
        + ["--run-id", "keep", *FAST]
    )
    assert r.returncode == 0, r.stderr
    run_dir = out_dir / "keep"
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    bad = run_dir / "part-zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    shown = effbench(["show", str(run_dir)])
    assert shown.returncode == 2
    assert "part-zz-corrupt.parquet" in shown.stderr and "--resume" in shown.stderr
    # a second sweep into the same run id refuses instead of overwriting
    again = effbench(["run", "--models", "tiny_mlp", "--out", str(out_dir), "--run-id", "keep"])
    assert again.returncode == 2 and "already holds a run" in again.stderr
    bad.unlink()
    after = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    assert after == before


def test_models_listing_counts_params(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from torchvision.models import get_model_weights

    assert main(["models", "--suite", "smoke", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["model"] for r in rows} == {
        "squeezenet1_1",
        "mobilenet_v3_small",
        "shufflenet_v2_x0_5",
        "resnet18",
    }
    for r in rows:
        assert r["params"] == get_model_weights(r["model"]).DEFAULT.meta["num_params"]


def test_flops_counter_is_still_accepted_as_the_macs_counter_flag() -> None:
    from bench.cli import build_parser

    for flag in ("--macs-counter", "--flops-counter"):
        args = build_parser().parse_args(["run", "--models", "lenet5", flag, "fvcore"])
        assert args.macs_counter == "fvcore"


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    r = effbench(["--version"])
    assert r.returncode == 0
    assert r.stdout.strip() == f"effbench {version('effbench')}"


def test_building_the_command_line_imports_neither_pandas_nor_torch() -> None:
    """Every command builds the whole parser first: it must not pay for pandas (0.3 s, the
    gate's imports) or torch (1.5 s) before knowing which command runs."""
    import subprocess
    import sys

    code = (
        "import sys, bench.cli; bench.cli.build_parser(); "
        "print(sorted(m for m in ('pandas', 'numpy', 'pyarrow', 'torch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def _commands() -> dict[str, argparse.ArgumentParser]:
    from bench.cli import build_parser

    (sub,) = (a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_option_and_positional_of_every_command_says_what_it_is() -> None:
    undocumented = {
        name: [a.dest for a in parser._actions if a.dest != "help" and not (a.help or "").strip()]
        for name, parser in _commands().items()
    }
    assert {k: v for k, v in undocumented.items() if v} == {}
    variant = next(a for a in _commands()["run"]._actions if a.dest == "variant")
    assert "python=PATH" in variant.help and "VAR=VALUE" in variant.help


def test_every_command_shows_examples_that_its_parser_accepts() -> None:
    """Each example under a command's --help parses with the real parser (an option that
    was renamed or removed fails here), and every command has some."""
    from bench.cli import build_parser
    from bench.cli_help import EXAMPLES

    commands = _commands()
    assert set(EXAMPLES) == set(commands)
    for name, parser in commands.items():
        shown = parser.format_help()
        assert "examples:" in shown
        for cmd, what in EXAMPLES[name]:
            assert f"  {cmd}\n" in shown and what in shown
            words = shlex.split(cmd)
            assert words[:2] == ["effbench", name], cmd
            build_parser().parse_args(words[1:])  # raises InvalidOption on a bad example
