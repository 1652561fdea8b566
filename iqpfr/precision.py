"""Training precision: chosen from what the hardware says it supports, never from a timing.

bf16 autocast pays on CUDA GPUs with bf16 support and on CPUs with AMX tiles (amx_bf16). On a
CPU with AVX512-bf16 but no AMX it does not: measured on this project's 2-core machine (AVX512-bf16,
no AMX; torch 2.14.1), a default stage-I forward+backward took 0.81 s in fp32 and 0.93 s under bf16
autocast, and single 3x3 convolutions were 1.2-1.9x slower in bf16 (`python -m benchmarks --only steps`
prints the ratio). So "auto" means bf16 on CUDA with bf16 and on AMX CPUs, fp32 elsewhere. The resolved precision is stored in
each checkpoint (a resume with another precision is refused) and recorded in the metrics;
evaluation and inference run in fp32 unless asked otherwise.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16")
CPU_BF16_FLAGS = ("amx_bf16",)


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    path = Path(cpuinfo)
    if not path.exists():
        return set()
    for line in path.read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def resolve(precision: str, device: torch.device | str, flags: set[str] | None = None,
            bf16_flags: tuple[str, ...] = CPU_BF16_FLAGS) -> str:
    """"auto" -> "bf16" where bf16 is fast (a CUDA device with bf16, or a CPU with one of
    `bf16_flags`: for training, amx_bf16), else "fp32". "fp32" and "bf16" are returned as asked."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        flags = cpu_flags() if flags is None else flags
        return "bf16" if any(f in flags for f in bf16_flags) else "fp32"
    return "fp32"


def autocast(precision: str, device: torch.device | str):
    """The autocast context for a resolved precision ("bf16" or "fp32") on `device`."""
    device = torch.device(device)
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
