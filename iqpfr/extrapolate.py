"""How long a training curve would need to reach a target: a log-linear fit of its last points;
and how much of a measured error would have to go for a rank correlation to reach a target.

Used to say what budget a threshold would need when the profile's budget does not reach it
(notebooks 02 and 06). The fit is an extrapolation, stated as one: a curve that bends over sooner
than the fit assumes needs longer than it says. The error share is a what-if on measured data.
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


def error_kept_for_spearman(truth: np.ndarray, measured: np.ndarray, target: float, grid: int = 100) -> float:
    """What-if on measured data: the largest share a of each item's error (measured - truth) that
    may remain for Spearman(truth, truth + a * error) to reach `target` (a on a grid of `grid`
    steps in [0, 1]). 1.0: already there. It rescales the measured errors, it does not predict
    how a model's errors shrink. truth, measured: (N,), N >= 3.
    """
    from scipy.stats import spearmanr

    truth, measured = np.asarray(truth, dtype=float), np.asarray(measured, dtype=float)
    if truth.shape != measured.shape or truth.ndim != 1 or len(truth) < 3:
        raise ValueError("need two (N,) arrays of the same length, N >= 3")
    error = measured - truth
    for a in np.linspace(1.0, 0.0, grid + 1):
        if spearmanr(truth, truth + a * error)[0] >= target:
            return float(a)
    return 0.0
