"""bench/executor_registry.py: the `--executor` choices come from the registry, and the run
session refuses or allows options by the chosen executor's capabilities, never its name.
A fake executor registered with given capabilities drives the session's checks in this
process (no worker, no subprocess: these are unit tests)."""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import session
from bench.cli import build_parser
from bench.errors import InvalidOption
from bench.executor import Capabilities, WorkerExit
from bench.executor_registry import (
    BUILTIN,
    capabilities,
    executor_class,
    executor_names,
    names_where,
    register_executor,
    unregister_executor,
)
from bench.plan import Inventory


def _fake(caps: Capabilities) -> type:
    class FakeExecutor:
        capabilities = caps
        made = 0

        def __init__(self) -> None:
            type(self).made += 1

        def prepare(self) -> None:
            pass

        def cancel(self) -> None:
            pass

        def run(self, task: Any, on_message: Callable[..., None], timeout_s: float) -> Any:
            return WorkerExit("ok")

    return FakeExecutor


@pytest.fixture
def fake() -> Iterator[Callable[[Capabilities], type]]:
    """Registers ``fake`` with the capabilities given (again: replaced); withdrawn after."""

    def register(caps: Capabilities) -> type:
        if "fake" in executor_names():
            unregister_executor("fake")
        cls = _fake(caps)
        register_executor("fake", cls, "a test's executor")
        return cls

    yield register
    if "fake" in executor_names():
        unregister_executor("fake")


RUN = ("run", "--models", "tiny_mlp")


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args((*RUN, *argv))


REMOTE = Capabilities(local=False, parallel=False, interpreters=False, pingpong=False)


def test_the_choices_are_the_registry_and_a_registered_executor_joins_them(fake: Any) -> None:
    assert executor_names() == tuple(e.name for e in BUILTIN) == ("fork", "subprocess", "ray")
    with pytest.raises(InvalidOption, match="invalid choice: 'fake'"):
        build_parser().parse_args(("run", "--executor", "fake"))
    cls = fake(Capabilities())
    assert _args("--executor", "fake").executor == "fake"
    assert executor_class("fake") is cls
    with pytest.raises(ValueError, match="already registered"):
        register_executor("fork", cls)
    with pytest.raises(KeyError, match="unknown executor 'nope'"):
        executor_class("nope")


def test_the_builtin_executors_declare_what_the_session_used_to_ask_by_name() -> None:
    assert {executor_class(n).__module__ for n in ("fork", "subprocess")} == {"bench.executor"}
    assert capabilities("fork").fork_server and not capabilities("fork").new_interpreter
    assert capabilities("subprocess").new_interpreter
    ray = capabilities("ray")
    assert (ray.local, ray.parallel, ray.interpreters, ray.pingpong) == (False,) * 4
    assert ray.cluster and names_where("cluster") == ["ray"]
    assert names_where("local", False) == ["ray"]


def test_a_remote_executor_has_no_ceilings_by_default_and_refuses_them(
    fake: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(session.NO_CEILINGS_ENV, raising=False)
    fake(REMOTE)
    assert session._ceilings_wanted(_args("--executor", "fake")) is False
    assert "--executor fake runs the workers elsewhere" in capsys.readouterr().err
    assert session._ceilings_wanted(_args("--executor", "fake", "--no-ceilings")) is False
    with pytest.raises(InvalidOption, match=r"--ceilings measures this machine.*effbench peak"):
        session._check_executor(_args("--executor", "fake", "--ceilings"))
    with pytest.raises(InvalidOption, match="--count-instructions counts on this machine"):
        session._check_executor(_args("--executor", "fake", "--count-instructions"))


def test_a_local_executor_keeps_ceilings_and_instruction_counts(
    fake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(session.NO_CEILINGS_ENV, raising=False)
    fake(Capabilities())
    assert session._ceilings_wanted(_args("--executor", "fake")) is True
    session._check_executor(_args("--executor", "fake", "--ceilings", "--count-instructions"))


def test_a_cluster_address_needs_a_cluster_executor(fake: Any) -> None:
    fake(Capabilities())
    with pytest.raises(InvalidOption, match=r"--ray-address needs --executor ray$"):
        session._check_executor(_args("--executor", "fake", "--ray-address", "auto"))
    fake(Capabilities(cluster=True))
    session._check_executor(_args("--executor", "fake", "--ray-address", "auto"))


@pytest.mark.parametrize(
    ("caps", "extra", "message"),
    [
        (Capabilities(pingpong=False), (), "drop --executor fake and --parallel"),
        (Capabilities(), ("--parallel",), "drop --executor ray and --parallel"),
    ],
)
def test_pingpong_asks_the_executor(
    fake: Any, caps: Capabilities, extra: tuple[str, ...], message: str
) -> None:
    fake(caps)
    arms = ("--variant", "a", "--variant", "b", "--pingpong", "--executor", "fake")
    with pytest.raises(InvalidOption, match=message):
        session._check_pingpong(_args(*arms, *extra))


def test_pingpong_with_a_capable_executor_passes(fake: Any) -> None:
    fake(Capabilities())
    arms = ("--variant", "a", "--variant", "b", "--pingpong", "--executor", "fake")
    session._check_pingpong(_args(*arms))


def _new_lanes(tmp_path: Path, *argv: str) -> Any:
    args = _args("--out", str(tmp_path), "--batch-sizes", "1", *argv)
    inventory = Inventory({"cpu": frozenset({"float32"})}, 1)
    return session._new_lanes(args, ["run"], inventory, None, lambda threads: None)


@pytest.mark.parametrize(
    ("flag", "refused", "message"),
    [
        ("parallel", ("--parallel",), "--parallel is for one box; drop it with --executor fake"),
        (
            "interpreters",
            # refused before the interpreter is asked anything: any executable file does
            ("--variant", f"a:python={shutil.which('sh')}", "--variant", "b"),
            "python=PATH runs locally; drop --executor fake",
        ),
        ("local", ("--configs", "malloc:jemalloc"), "drop them with --executor fake"),
    ],
)
def test_new_lanes_refuse_what_the_executor_cannot_do_before_writing(
    fake: Any, tmp_path: Path, flag: str, refused: tuple[str, ...], message: str
) -> None:
    fake(Capabilities(**{flag: False}))
    with pytest.raises(InvalidOption, match=message):
        _new_lanes(tmp_path, "--executor", "fake", *refused)
    assert not any(tmp_path.iterdir())


def test_new_lanes_allow_parallel_with_an_executor_that_can(fake: Any, tmp_path: Path) -> None:
    fake(Capabilities())
    lanes = _new_lanes(tmp_path, "--executor", "fake", "--parallel", "--no-ceilings")
    try:
        assert [lane[2].parallel for lane in lanes] == [True]
    finally:
        for lane in lanes:
            lane[4].release()


def test_the_session_makes_the_registered_class(fake: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``_measure`` builds each lane's executor from the registry: the fake runs the group."""
    cls = fake(Capabilities())
    seen: list[Any] = []

    def run_interleaved(opened: Any, executor: Any, *rest: Any) -> list[Any]:
        seen.append(executor)
        return []

    monkeypatch.setattr("bench.runner.run_interleaved", run_interleaved)
    lane = (Path("x"), "x", _options(), (), None)
    assert session._measure(_args("--executor", "fake"), [], [lane], [], None) == []
    assert isinstance(seen[0], cls) and cls.made == 1


def _options() -> Any:
    from bench.plan import Options

    return Options(models=("tiny_mlp",), batch_sizes=(1,), devices=("cpu",), dtypes=("float32",))
