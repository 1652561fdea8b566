"""Reproducible runs: fixed thread counts, no dynamic threading, deterministic algorithms, and a
record of the environment a result came from.

A rerun on the same machine should give the same bits, also when the machine is busy. What can
break that on a CPU is a thread count that changes between runs (a reduction split over another
number of threads sums in another order): MKL and OpenMP may lower their thread count under load
when "dynamic" threading is on, and torch's default count follows the machine. So the pipeline
pins them: `pin_environment` (before torch starts its thread pools, i.e. in the process that
launches a stage or notebook kernel) and `configure` (in the process that computes).
"""
from __future__ import annotations

import os
import platform

PINNED = {"OMP_DYNAMIC": "FALSE", "MKL_DYNAMIC": "FALSE", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}


def thread_count() -> int:
    """Threads for intra-op parallelism: $IQPFR_THREADS, else every core of this machine."""
    return int(os.environ.get("IQPFR_THREADS", os.cpu_count() or 1))


def pin_environment() -> None:
    """Set the variables that OpenMP/MKL/cuBLAS read at start-up (inherited by child processes such
    as papermill's kernel). Values a user set explicitly are kept."""
    for key, value in PINNED.items():
        os.environ.setdefault(key, value)
    n = str(thread_count())
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(key, n)


def configure(compiling: bool = False) -> None:
    """In the computing process: pinned environment, torch's thread count, deterministic algorithms
    (warn-only: an op without a deterministic kernel warns instead of stopping the run).

    `torch.use_deterministic_algorithms` also imports `torch._inductor.config` to set the compiler's
    own flag: 1.4 s of every process on the 2-core machine (torch 2.14), a third of a short stage.
    Nothing in the pipeline compiles, so by default only ATen's flag, the one eager kernels read, is
    set (the same bits); `compiling=True` (the benchmark suite's torch.compile) sets both."""
    import torch

    pin_environment()
    torch.set_num_threads(thread_count())
    if compiling:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def describe() -> dict:
    """The environment a result came from (recorded in the training metrics)."""
    import numpy as np
    import torch

    from .precision import cpu_flags

    flags = cpu_flags()
    model = ""
    if os.path.exists("/proc/cpuinfo"):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "")
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "cpu": model or platform.processor(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "cpu_bf16_flags": sorted(f for f in flags if f in ("avx512_bf16", "amx_bf16", "amx_tile")),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            **{k: os.environ.get(k) for k in ("OMP_DYNAMIC", "MKL_DYNAMIC", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}}
