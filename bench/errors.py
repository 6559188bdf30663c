"""The suite's error hierarchy. Messages say what to do next; only the CLI exits."""

from __future__ import annotations


class BenchError(Exception):
    """Base class of every error the suite raises on purpose."""


class InvalidOption(BenchError):
    """A command-line option or sweep option is malformed or impossible."""


class UnknownModel(InvalidOption):
    """A model name is not registered."""


class UnknownSuite(InvalidOption):
    """A suite name is not defined."""


class DeviceUnavailable(InvalidOption):
    """A requested device is not present, or cannot run a requested dtype."""


class OutputNotWritable(BenchError):
    """The output folder cannot be created or written."""


class ResultsCorrupt(BenchError):
    """A results file or folder cannot be read as effbench results."""


class ResultsTooNew(ResultsCorrupt):
    """A results file was written by a newer effbench, under a row contract
    (``bench.schema.SCHEMA_VERSION``) this one does not know."""


class WorkerProtocolError(BenchError):
    """A worker process sent something the runner cannot understand."""


class NothingCompared(BenchError):
    """A comparison's two sides share no cell, so nothing was compared."""


class ToolMissing(BenchError):
    """A program a requested measurement needs (valgrind, a C compiler) is not installed."""


class RunLocked(BenchError):
    """Another runner holds the run folder's lock."""


class Interrupted(BaseException):
    """A signal (SIGINT, SIGTERM, SIGHUP) asked the sweep to stop; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
