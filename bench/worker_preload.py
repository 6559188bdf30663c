"""Imported once by the executor's fork server, before any worker is forked: the slow
imports (torch, torchvision, the model registry) happen there, not in every worker. No
tensor is created and no thread pool is started, so each forked worker starts clean."""

import atexit
import gc

import torch  # noqa: F401
import torchvision  # noqa: F401

import bench.worker  # noqa: F401
from models import list_models

list_models()
# the server's exit skips collecting torch's objects (0.8-0.9 s; see bench.cli.entry)
atexit.register(gc.freeze)
