"""The synthetic face world with known quality: pristine renders, capture degradation, true quality.

Every GT image here is a pristine render (`synthfaces.render_face`) passed through a recorded
capture degradation (`degrade.capture`). Its **true quality** is a full-reference similarity to
its pristine oracle: SSIM (Wang et al. 2004: Gaussian window sigma 1.5, population covariances,
K1=0.01, K2=0.03) on the BT.601 luma channel of the 8-bit images, clipped to [0, 1]. The oracle is
written apart and training never reads it.

How quality is controlled: each image draws a *target* quality from a distribution and a random
mixture direction (blur, noise, JPEG); a bisection on the severity along that direction finds the
capture whose measured SSIM is closest to the target. The recorded true quality is the SSIM
actually measured, not the target and not a function of one degradation parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from skimage.metrics import structural_similarity

from .degrade import CaptureRanges, capture, to_uint8_grid
from .synthfaces import render_face

# Split identifiers: the second element of every face seed, so splits never share a face.
SPLITS = {"train": 0, "holdout": 1, "iqa_train": 2, "iqa_val": 3, "iqa_unseen": 4, "test": 5}


@dataclass(frozen=True)
class QualityDistribution:
    """Target true-quality distribution, shaped like FFHQ's (SPEC 2, Figure 2 of the paper).

    A `clean_fraction` of near-pristine images (uniform in [0.9, 1.0]), a peak (normal around
    `peak`, std `peak_width`), and a `tail_fraction` spread uniformly over [tail_low, peak].
    `uniform=True` instead draws uniformly over [tail_low, 1.0] (labelled IQA sets).
    """

    clean_fraction: float = 0.12
    peak: float = 0.84
    peak_width: float = 0.04
    tail_fraction: float = 0.25
    tail_low: float = 0.02
    uniform: bool = False

    def sample(self, rng: np.random.Generator) -> float:
        if self.uniform:
            return float(rng.uniform(self.tail_low, 1.0))
        u = rng.random()
        if u < self.clean_fraction:
            return float(rng.uniform(0.9, 1.0))
        if u < self.clean_fraction + self.tail_fraction:
            return float(rng.uniform(self.tail_low, self.peak))
        return float(np.clip(rng.normal(self.peak, self.peak_width), self.tail_low, 1.0))


def luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) RGB image in [0,1] -> (H, W) in [0,1]."""
    return img @ np.array([0.299, 0.587, 0.114], np.float32)


def true_quality(gt: np.ndarray, oracle: np.ndarray) -> float:
    """SSIM on luma between a GT and its pristine oracle, clipped to [0, 1]. Inputs (H, W, 3) in [0,1]."""
    s = structural_similarity(luma(gt), luma(oracle), data_range=1.0, gaussian_weights=True,
                              sigma=1.5, use_sample_covariance=False)
    return float(np.clip(s, 0.0, 1.0))


def capture_at_quality(pristine: np.ndarray, target: float, rng: np.random.Generator,
                       ranges: CaptureRanges, family: str = "train", steps: int = 9) -> tuple[np.ndarray, dict]:
    """Find by bisection the capture severity whose true quality is closest to `target`.

    pristine: (H, W, 3) float32 in [0,1] on the 8-bit grid. Returns (gt image, record) where the
    record holds the mixture, severity, capture parameters and the measured true quality.
    """
    mix = rng.dirichlet([0.7, 0.7, 0.7])
    mix = mix / mix.max()
    field = rng.standard_normal(pristine.shape).astype(np.float32)
    lo, hi = 0.0, 1.0
    best = None
    for _ in range(steps):
        t = (lo + hi) / 2
        img, params = capture(pristine, t, mix, field, ranges, family)
        q = true_quality(img, pristine)
        if best is None or abs(q - target) < abs(best[2] - target):
            best = (img, params, q, t)
        lo, hi = (t, hi) if q > target else (lo, t)
    if target >= 0.999:  # no degradation at all
        best = (pristine, {}, 1.0, 0.0)
    img, params, q, t = best
    record = {"target_quality": round(target, 4), "severity": round(t, 4), "true_quality": round(q, 5),
              "mix_blur": round(float(mix[0]), 4), "mix_noise": round(float(mix[1]), 4),
              "mix_jpeg": round(float(mix[2]), 4), "family": family}
    record.update({f"cap_{k}": v for k, v in params.items()})
    return img, record


def make_sample(seed: int, split: str, index: int, resolution: int, dist: QualityDistribution,
                ranges: CaptureRanges, family: str = "train",
                restorer_fraction: float = 0.0) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render face (seed, split, index) and capture it. Returns (gt, oracle, record).

    gt and oracle are (R, R, 3) float32 in [0,1] on the 8-bit grid. With `restorer_fraction` > 0
    (family "train"), that fraction of the samples takes the "restorer" family instead (the draw
    happens only then, so the world's samples are unchanged by this option).
    """
    face_seed = [seed, SPLITS[split], index]
    face = render_face(face_seed, resolution)
    oracle = to_uint8_grid(face.image)
    rng = np.random.default_rng(face_seed + [1])
    target = dist.sample(rng)
    if family == "train" and restorer_fraction > 0 and rng.random() < restorer_fraction:
        family = "restorer"
    gt, record = capture_at_quality(oracle, target, rng, ranges, family)
    record = {"split": split, "index": index, "seed": "-".join(map(str, face_seed)), **record}
    for k, (x, y) in enumerate(face.landmarks):
        record[f"lm{k}_x"], record[f"lm{k}_y"] = round(float(x), 2), round(float(y), 2)
    record.update(face.attributes)
    return gt, oracle, record
