"""Imported by the fork server after ``bench.worker_preload`` when the runner has imported
torchvision (a torchvision network is in the run, or a plugin builds on torchvision): every
stage of the registry, torchvision included (1.1 s), so that no worker imports it again."""

from models.registry import load

load()
