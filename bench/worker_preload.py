"""Imported once by the executor's fork server, before any worker is forked: the slow
imports (torch, the worker, the registry's first stage: our networks and the plugins)
happen there, not in every worker. torchvision's zoo comes with
``bench.worker_preload_all`` when the run needs it. No tensor is created and no thread
pool is started, so each forked worker starts clean."""

import atexit
import gc

import torch  # noqa: F401

import bench.worker  # noqa: F401
from models.registry import load

load(stages=1)
# the server's exit skips collecting torch's objects (0.8-0.9 s; see bench.cli.entry)
atexit.register(gc.freeze)
