"""bench.devices: the conditions a measurement sets up on its device (CUDA faked at
``torch.cuda.set_device``; the backend flags are process settings a CPU build keeps too)."""

from __future__ import annotations

import pytest
import torch

from bench import devices


def test_a_cuda_device_is_made_current_under_the_sweeps_kernel_choices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made_current: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", made_current.append)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = (cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32)
    try:
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = False, True, True
        devices.use_device("cuda:1")
        assert made_current == [torch.device("cuda:1")]
        assert cudnn.benchmark and not cudnn.allow_tf32 and not matmul.allow_tf32

        devices.use_device("cuda:1", tf32=True)  # --tf32
        assert cudnn.allow_tf32 and matmul.allow_tf32

        made_current.clear()
        cudnn.benchmark = False
        devices.use_device("cpu")
        assert made_current == [] and not cudnn.benchmark
    finally:  # process settings (matmul's are not attributes monkeypatch can restore)
        cudnn.benchmark, cudnn.allow_tf32, matmul.allow_tf32 = before
