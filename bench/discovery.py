"""What the devices here run, listed without leaving a CUDA context in the caller.

:func:`bench.devices.discover` runs a small forward on every device and dtype; on a GPU that
makes a CUDA context, which a long-lived caller keeps: the runner for the whole sweep, a Ray
worker for as long as Ray keeps it (GPU memory, and a process on the device beside every
worker: docs/gpu-validation.md). Where a GPU is present (asking makes no context) the
listing runs in a process forked from the fork server instead; elsewhere in the caller,
whose CPU forwards make no context. Not yet run on a GPU."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from bench.errors import DeviceUnavailable, WorkerProtocolError


def without_context(listing: Callable[[], Any], whose: str) -> Any:
    """``listing()`` (``devices.discover`` or ``devices.environment``): in a process forked
    from the fork server where a GPU is present, on Linux; here otherwise. A failure there
    is :class:`DeviceUnavailable` naming ``whose`` devices ("this machine's")."""
    from bench import devices
    from bench.executor import call_in_fresh_process

    if not (sys.platform.startswith("linux") and devices.has_accelerator()):
        return listing()
    try:
        return call_in_fresh_process(listing, (), devices.PROBE_TIMEOUT_S)
    except WorkerProtocolError as e:
        raise DeviceUnavailable(
            f"could not list {whose} devices (in a process of the fork server): {e}; "
            "`effbench env` lists them in its own process and shows the error"
        ) from e
