"""The one way the project reads a tensor file: as data, never as code.

`torch.load(..., weights_only=True)` unpickles only tensors and plain containers (dict, list,
tuple, str, int, float, bool, None), so a checkpoint, bundle or target file handed in by someone
else cannot run code when it is opened (a pickle can: PyTorch made weights_only the default in 2.6
for that reason). Training state that is not of those types is stored in a form that is (the
numpy RNG state as a tensor and plain numbers: `train.rng_state`). A file that needs anything
else is refused with an error naming it. Tests check that no other module calls `torch.load`.
"""
from __future__ import annotations

from pathlib import Path

import torch


def load(path: str | Path, what: str = "tensor file", map_location: str | torch.device = "cpu"):
    """Read `path` with weights_only=True. FileNotFoundError if missing; ValueError (naming the
    file) if it is unreadable or holds objects other than tensors and plain data."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a file we will not trust
        reason = str(err).strip().splitlines()
        first = next((line for line in reason if "Unsupported global" in line or "GLOBAL" in line), reason[0] if reason else "")
        raise ValueError(f"{path} is not a readable {what}: it is damaged or holds objects other than tensors and plain "
                         f"data, which are refused ({type(err).__name__}: {first.strip()})") from None
