"""Degrade to a target true quality: bisection on a severity in [0, 1].

Used by the worlds whose images must follow a chosen quality distribution (the underwater
references, the colour task's GTs): a degradation `make(t)` whose true quality falls as its
severity t rises is evaluated at the midpoints of a shrinking interval, and the image whose
measured quality is closest to the target is kept. The recorded quality is the measured one,
never the target.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np


def at_quality(make: Callable[[float], np.ndarray], quality: Callable[[np.ndarray], float], target: float,
               steps: int = 9) -> tuple[np.ndarray, float, float]:
    """Returns (image, measured quality, severity) closest to `target` after `steps` bisections."""
    best, lo, hi = None, 0.0, 1.0
    for _ in range(steps):
        t = (lo + hi) / 2
        img = make(t)
        q = quality(img)
        if best is None or abs(q - target) < abs(best[1] - target):
            best = (img, q, t)
        lo, hi = (t, hi) if q > target else (lo, t)
    return best


def synthetic_sets(task, data_cfg, iqa, gts, uniform) -> list[tuple]:
    """The sets a task's synthetic world renders, each (folder, split, count, seed, quality
    distribution, family): training and held-out GTs drawn from `gts`, and the prior's labelled
    train/val/unseen splits drawn from `uniform` (unseen: degradations it never trains on)."""
    seed = data_cfg.seed
    return [(task.world / "train", "train", data_cfg.num_train, seed, gts, "train"),
            (task.world / "holdout", "holdout", data_cfg.num_holdout, seed, gts, "train"),
            (task.iqa / "train", "iqa_train", iqa.num_train, seed, uniform, "train"),
            (task.iqa / "val", "iqa_val", iqa.num_val, seed, uniform, "train"),
            (task.iqa / "unseen", "iqa_unseen", iqa.num_unseen, seed, uniform, "unseen")]


def summary(q: np.ndarray) -> dict:
    """Count, mean and 0.1-bin histogram of a set's measured true qualities (for world.json)."""
    return {"count": len(q), "true_quality_mean": float(np.mean(q)),
            "true_quality_bins": np.histogram(q, bins=10, range=(0, 1))[0].tolist()}
