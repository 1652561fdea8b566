"""True quality: how close an image is to the clean image behind it, on [0, 1].

Only the synthetic worlds have it (they render the clean image); training never reads the clean
image. Two definitions, one per kind of task:

- `luma(img, clean)`: SSIM on BT.601 luma (`world.true_quality`). Faces: their degradations
  (blur, noise, blocks) are structural.
- `colour(img, clean)`: luma SSIM times exp(-mean CIEDE2000 / TAU). Underwater and colour
  enhancement: a colour cast, most of what those tasks fix, leaves luma structure almost intact,
  so luma SSIM alone would call a blue-green image "perfect". CIEDE2000 (Sharma et al. 2005) is
  computed by scikit-image on CIELAB (D65). TAU = 20 is our choice: a mean colour difference of
  20 units (a strong cast) costs a factor 1/e, 2.3 units (about one just-noticeable difference)
  costs 11%; the product is 1 only for an image equal to the clean one. (With TAU = 10 raw
  underwater images of the synthetic world all fell below 0.05, leaving no range to rank them.)
"""
from __future__ import annotations

import numpy as np
import torch
from skimage.color import deltaE_ciede2000, rgb2lab

from .world import true_quality as _luma_ssim

TAU = 20.0


def _grid(img: np.ndarray) -> np.ndarray:
    return (np.clip(np.rint(img * 255), 0, 255) / 255.0).astype(np.float32)


def luma(img: np.ndarray, clean: np.ndarray) -> float:
    """SSIM on luma between (H, W, 3) images in [0,1] (8-bit grid), clipped to [0, 1]."""
    return _luma_ssim(_grid(img), _grid(clean))


def ciede2000(img: np.ndarray, clean: np.ndarray) -> float:
    """Mean CIEDE2000 colour difference between (H, W, 3) sRGB images in [0,1] (0 = identical)."""
    return float(deltaE_ciede2000(rgb2lab(_grid(img)), rgb2lab(_grid(clean))).mean())


def colour(img: np.ndarray, clean: np.ndarray) -> float:
    """Colour-aware true quality in [0, 1]: luma SSIM x exp(-mean CIEDE2000 / TAU)."""
    return colour_against(clean)(img)


def colour_against(clean: np.ndarray):
    """`colour(img, clean)` as a function of img alone, with the clean image's side (its 8-bit grid
    and CIELAB) computed once: the bisections score nine candidates against one clean image."""
    grid = _grid(clean)
    lab = rgb2lab(grid)

    def quality(img: np.ndarray) -> float:
        g = _grid(img)
        delta = float(deltaE_ciede2000(rgb2lab(g), lab).mean())
        return _luma_ssim(g, grid) * float(np.exp(-delta / TAU))

    return quality


DEFINITIONS = {"luma": luma, "colour": colour}


def per_image(fn, x: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
    """Apply a true-quality function to image batches (N, 3, H, W) in [0,1] -> (N,)."""
    a, b = x.permute(0, 2, 3, 1).numpy(), clean.permute(0, 2, 3, 1).numpy()
    return np.array([fn(u, v) for u, v in zip(a, b)], np.float64)
