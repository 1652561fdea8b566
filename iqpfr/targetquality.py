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
