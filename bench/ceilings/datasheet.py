"""Datasheet peaks of the GPUs the suite knows: labelled ``datasheet``, cited, and never
used as a roof (docs/ceilings.md says how each figure was checked)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.ceilings.record import BYTES_PER_S, MACS_PER_S, Ceiling, _check_dtype


@dataclass(frozen=True, slots=True)
class Datasheet:
    """Dense peaks of one GPU model as its NVIDIA datasheet gives them.

    ``flops`` are dense FLOP/s per dtype (a figure the sheet marks "with sparsity" is
    halved); ``float32`` is the non-tensor-core FP32 peak. A device matches when its name
    contains one of ``names`` and none of ``unless`` (case-insensitive).
    """

    model: str
    names: tuple[str, ...]
    flops: dict[str, float]
    flops_note: dict[str, str]
    bandwidth_bytes_per_s: float
    citation: str
    unless: tuple[str, ...] = ()


_H200 = (
    "NVIDIA H200 Tensor Core GPU datasheet (NVIDIA, 2023), "
    "https://nvdam.widen.net/s/nb5zzzsjdf/hpc-datasheet-sc23-h200-datasheet-3002446"
)
_H100 = (
    "NVIDIA H100 Tensor Core GPU datasheet (NVIDIA), "
    "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
)
_A100 = (
    "NVIDIA A100 Tensor Core GPU datasheet (NVIDIA, June 2021), "
    "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/"
    "nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
)
_V100 = (
    "NVIDIA V100 Tensor Core GPU datasheet (NVIDIA), "
    "https://images.nvidia.com/content/technologies/volta/pdf/"
    "volta-v100-datasheet-update-us-1165301-r5.pdf"
)
_SPARSE = "{half} TFLOP/s: the sheet's {sparse} TFLOPS is with 2:4 sparsity, dense is half"


def _hopper(sparse16: float, fp32: float) -> tuple[dict[str, float], dict[str, str]]:
    half = sparse16 / 2
    note16 = _SPARSE.format(half=f"{half:g}", sparse=f"{sparse16:,.0f}")
    flops = {"float32": fp32 * 1e12, "float16": half * 1e12, "bfloat16": half * 1e12}
    notes = {
        "float32": f"{fp32:g} TFLOP/s FP32 (non-tensor-core)",
        "float16": f"FP16 Tensor Core {note16}",
        "bfloat16": f"BF16 Tensor Core {note16}",
    }
    return flops, notes


def _ampere() -> tuple[dict[str, float], dict[str, str]]:
    flops = {"float32": 19.5e12, "float16": 312e12, "bfloat16": 312e12}
    notes = {
        "float32": "19.5 TFLOP/s FP32 (non-tensor-core)",
        "float16": "312 TFLOP/s FP16 Tensor Core (dense; 624 with sparsity)",
        "bfloat16": "312 TFLOP/s BF16 Tensor Core (dense; 624 with sparsity)",
    }
    return flops, notes


def _volta(fp32: float, tensor: float) -> tuple[dict[str, float], dict[str, str]]:
    flops = {"float32": fp32 * 1e12, "float16": tensor * 1e12}
    notes = {
        "float32": f"{fp32:g} TFLOP/s single precision",
        "float16": f"{tensor:g} TFLOP/s tensor performance (FP16 Tensor Core)",
    }
    return flops, notes


DATASHEETS: tuple[Datasheet, ...] = (
    # torch may name an H200 NVL (60 TFLOP/s FP32, lower tensor peaks) "NVIDIA H200" too;
    # no NVL figures are kept (not verified), so a name saying NVL matches nothing.
    Datasheet("H200 SXM", ("H200",), *_hopper(1979, 67), 4.8e12, _H200, unless=("NVL",)),
    Datasheet("H100 SXM", ("H100 80GB HBM3", "H100 SXM"), *_hopper(1979, 67), 3.35e12, _H100),
    Datasheet("H100 PCIe", ("H100 PCIe",), *_hopper(1513, 51), 2.0e12, _H100),
    Datasheet("A100 80GB SXM", ("A100-SXM4-80GB", "A100 SXM4 80GB"), *_ampere(), 2039e9, _A100),
    Datasheet("A100 40GB SXM", ("A100-SXM4-40GB", "A100 SXM4 40GB"), *_ampere(), 1555e9, _A100),
    Datasheet("A100 80GB PCIe", ("A100 80GB PCIe",), *_ampere(), 1935e9, _A100),
    Datasheet("A100 40GB PCIe", ("A100-PCIE-40GB", "A100 PCIe 40GB"), *_ampere(), 1555e9, _A100),
    Datasheet("V100 SXM2", ("V100-SXM2", "V100 SXM2"), *_volta(15.7, 125), 900e9, _V100),
    Datasheet("V100 PCIe", ("V100-PCIE", "V100 PCIe"), *_volta(14, 112), 900e9, _V100),
)


def find_datasheet(device_name: str) -> Datasheet | None:
    """The datasheet whose longest matching name occurs in ``device_name``, if any."""
    name = device_name.lower()
    best: tuple[int, Datasheet] | None = None
    for sheet in DATASHEETS:
        if any(u.lower() in name for u in sheet.unless):
            continue
        for key in sheet.names:
            if key.lower() in name and (best is None or len(key) > best[0]):
                best = (len(key), sheet)
    return None if best is None else best[1]


def datasheet_ceilings(device: str, device_name: str, dtype: str) -> tuple[Ceiling, ...]:
    """Datasheet peaks for a known GPU: dense compute in MACs/s (FLOP/s ÷ 2, one
    multiply-add being two FLOPs) for ``dtype`` where the sheet gives it, and memory
    bandwidth in bytes/s. Empty for CPUs and unknown GPUs."""
    _check_dtype(dtype)
    if device == "cpu":
        return ()
    sheet = find_datasheet(device_name)
    if sheet is None:
        return ()

    def ceiling(kind: str, value: float, unit: str, method: str) -> Ceiling:
        return Ceiling(
            device=device,
            device_name=device_name,
            dtype=dtype,
            threads=0,
            kind=kind,
            value=value,
            unit=unit,
            source="datasheet",
            method=method,
            ci_rel=None,
            samples=None,
            citation=sheet.citation,
        )

    out = []
    if dtype in sheet.flops:
        method = f"{sheet.model} datasheet: {sheet.flops_note[dtype]}; ÷ 2 FLOP per MAC"
        out.append(ceiling("datasheet_compute", sheet.flops[dtype] / 2, MACS_PER_S, method))
    bw = sheet.bandwidth_bytes_per_s
    method = f"{sheet.model} datasheet: GPU memory bandwidth {bw / 1e9:,.0f} GB/s"
    out.append(ceiling("datasheet_bandwidth", bw, BYTES_PER_S, method))
    return tuple(out)
