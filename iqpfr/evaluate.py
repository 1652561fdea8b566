"""Evaluation metrics, with their conventions stated (SPEC 4).

- PSNR: RGB, all three channels, no border crop, on images rounded to the 8-bit grid, data range
  1 (i.e. 255 for 8-bit). Identical images give +inf; `psnr` caps it at 100 dB so tables stay
  numeric, and says so.
- SSIM: on the BT.601 luma channel, Gaussian window sigma 1.5, population covariances
  (Wang et al. 2004), no crop; the same measure that defines true quality in the synthetic world.
"""
from __future__ import annotations

import numpy as np

from .world import true_quality

PSNR_CAP = 100.0


def to_grid(img: np.ndarray) -> np.ndarray:
    """Round (H, W, 3) float in [0,1] to the 8-bit grid."""
    return np.clip(np.rint(img * 255), 0, 255) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between (H, W, 3) images in [0,1] (RGB, no crop, 8-bit grid), capped at 100."""
    mse = float(np.mean((to_grid(a) - to_grid(b)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(1.0 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on luma between (H, W, 3) images in [0,1] (8-bit grid), clipped to [0,1]."""
    return true_quality(to_grid(a).astype(np.float32), to_grid(b).astype(np.float32))
