"""Imported once by the executor's fork server, before any worker is forked: the slow
imports (torch, the worker, the registry's first stage: our networks and the plugins)
happen there, not in every worker, and so do the imports of the MACs counter's first
count (torch's compiler stack: 1.2 s a worker otherwise). torchvision's zoo comes with
``bench.worker_preload_all`` when the run needs it. No tensor with data is created (the
count is on ``meta``) and torch starts no thread pool, so each forked worker starts clean
(importing pyarrow starts jemalloc's background thread here; a fork copies only the
forking thread)."""

import atexit
import gc

import torch  # noqa: F401

import bench.worker  # noqa: F401
from bench.probes.macs import warm_counter
from models.registry import load

load(stages=1)
warm_counter()
# the server's exit skips collecting torch's objects (0.8-0.9 s; see bench.cli.entry)
atexit.register(gc.freeze)
