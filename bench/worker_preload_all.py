"""Imported by the fork server after ``bench.worker_preload`` when the runner has loaded
torchvision's zoo (a torchvision network is in the run): every stage of the registry,
torchvision included (1.1 s), so that no worker imports it again."""

from models.registry import load

load()
