"""How long a training curve would need to reach a target: a log-linear fit of its last points.

Used to say what budget a threshold would need when the profile's budget does not reach it
(notebook 02). It is an extrapolation, stated as one: a curve that bends over sooner than the fit
assumes needs longer than it says.
"""
from __future__ import annotations

import numpy as np


def log_linear_fit(steps: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Least-squares a, b of value = a + b * ln(step). steps: (N,) > 0, N >= 2."""
    steps, values = np.asarray(steps, dtype=float), np.asarray(values, dtype=float)
    if len(steps) < 2 or len(steps) != len(values) or (steps <= 0).any():
        raise ValueError("need two or more (step > 0, value) pairs")
    b, a = np.polyfit(np.log(steps), values, 1)
    return float(a), float(b)


def steps_to_reach(steps: np.ndarray, values: np.ndarray, target: float, last: int = 4) -> float | None:
    """The step at which a log-linear fit of the curve's `last` points reaches `target`.

    Returns the last measured step when the curve is already there, and None when the fit does not
    rise (it would never get there).
    """
    steps, values = np.asarray(steps, dtype=float)[-last:], np.asarray(values, dtype=float)[-last:]
    if values[-1] >= target:
        return float(steps[-1])
    a, b = log_linear_fit(steps, values)
    if b <= 0:
        return None
    return float(np.exp((target - a) / b))
