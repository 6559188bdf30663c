"""What NVML's process list says about this process and its relatives, step by step: the
evidence behind ``gpu_other_processes`` (bench/probes/gpu_processes.py).

    python scripts/nvml_processes.py [--device cuda:0]

Prints, after each step (nothing of CUDA yet; the device queries the runner makes; a
tensor on the device; a child process holding a context of its own), the PIDs NVML lists,
whether each is in this PID namespace, and what ``GpuProcesses`` counts as others for
this process and for the child. Needs a CUDA GPU and nvidia-ml-py; runs in about 15 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = (
    "import os, sys, time, torch; torch.zeros(1, device=sys.argv[1]); "
    "print('child', os.getpid(), flush=True); time.sleep(float(sys.argv[2]))"
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda:0")
    args = parser.parse_args()
    import pynvml
    import torch

    from bench.probes.gpu_processes import GpuProcesses, in_process_tree

    pynvml.nvmlInit()
    index = int(args.device.split(":")[1]) if ":" in args.device else 0
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    me = os.getpid()

    def show(step: str, child: int | None = None) -> None:
        listed = [p.pid for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
        where = {p: in_process_tree(p, {me}) for p in listed}
        mine = GpuProcesses(pynvml, handle, me).others()
        theirs = GpuProcesses(pynvml, handle, child, {me}).others() if child else None
        print(
            f"{step}: this pid {me}, listed {listed} "
            f"(in this tree / elsewhere here / not in this namespace: {where}); "
            f"others for this process {mine}"
            + (f"; for the child {child} (this process as its runner) {theirs}" if child else ""),
            flush=True,
        )

    show("before CUDA")
    torch.cuda.get_device_properties(index)
    torch.cuda.get_device_name(index)
    show("after get_device_properties/name (the runner's environment record)")
    torch.cuda.mem_get_info(index)
    show("after mem_get_info")
    torch.zeros(1, device=args.device)
    show("after a tensor on the device")
    child = subprocess.Popen([sys.executable, "-c", CHILD, args.device, "6"])
    time.sleep(4)
    show("with a child holding a context", child.pid)
    child.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
