"""Image degradations: the blind-restoration LQ pipeline and the synthetic "capture" process.

All functions take and return float32 RGB images of shape (H, W, 3) in [0, 1] and draw every
random number from the `numpy.random.Generator` they are given, so a degradation is a pure
function of (image, seed). Each returns the parameters it used, for the manifest.

Ranges are stated for 512 px faces (SPEC 1.4). At resolution R the blur sigma, the blur kernel
size and the downsampling factor are scaled by R/512 (r clamped to >= 1); noise and JPEG ranges
stay as they are. The scaled values are what is recorded.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_RESOLUTION = 512


@dataclass(frozen=True)
class DegradeRanges:
    """Ranges of the LQ pipeline blur -> downsample -> noise -> JPEG -> resize back (512 px units).

    noise is a Gaussian sigma in 8-bit units (x/255); jpeg is the quality factor.
    colour_jitter_prob and gray_prob add SPEC 1.8's colour-enhancement degradations.
    """

    blur_kernel_size: int = 41
    blur_sigma: tuple[float, float] = (1.0, 15.0)
    aniso_prob: float = 0.5
    downsample: tuple[float, float] = (4.0, 30.0)
    noise: tuple[float, float] = (0.0, 20.0)
    jpeg: tuple[int, int] = (30, 80)
    colour_jitter_prob: float = 0.0
    gray_prob: float = 0.0


PRESETS = {
    # CodeFormer's large range (SPEC 1.4).
    "codeformer": DegradeRanges(),
    # GFPGAN / VQFR v1 / RestoreFormer / CodeFormer stage III.
    "mild": DegradeRanges(blur_sigma=(0.1, 10.0), downsample=(0.8, 8.0), jpeg=(60, 100)),
    # DifFace-style test grid.
    "difface": DegradeRanges(blur_sigma=(4.0, 16.0), downsample=(4.0, 40.0), noise=(1.0, 20.0), jpeg=(30, 70)),
    # Colour enhancement (SPEC 1.8): restoration degradations plus colour jitter and grayscale.
    "colour": DegradeRanges(colour_jitter_prob=0.3, gray_prob=0.01),
}


def gaussian_kernel(size: int, sigma_x: float, sigma_y: float, theta: float) -> np.ndarray:
    """A normalised (size, size) Gaussian kernel with principal axes sigma_x, sigma_y rotated by theta."""
    half = size // 2
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    c, s = np.cos(theta), np.sin(theta)
    u, v = c * x + s * y, -s * x + c * y
    k = np.exp(-0.5 * ((u / sigma_x) ** 2 + (v / sigma_y) ** 2))
    return (k / k.sum()).astype(np.float32)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    """Round-trip through 8-bit JPEG at `quality` (1..100) with OpenCV."""
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", u8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0


def to_uint8_grid(img: np.ndarray) -> np.ndarray:
    """Round and clip to the 8-bit grid, back as float32 in [0,1]."""
    return np.clip(np.rint(img * 255), 0, 255).astype(np.float32) / 255.0


def _colour_jitter(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    b, c, s = rng.uniform(0.5, 1.5), rng.uniform(0.5, 1.5), rng.uniform(0.0, 1.5)
    h = rng.uniform(-0.1, 0.1)
    out = np.clip(img * b, 0, 1)
    mean = out.mean()
    out = np.clip((out - mean) * c + mean, 0, 1)
    hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)  # H in degrees for float input
    hsv[..., 1] = np.clip(hsv[..., 1] * s, 0, 1)
    hsv[..., 0] = (hsv[..., 0] + h * 360.0) % 360.0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB), {"brightness": b, "contrast": c, "saturation": s, "hue": h}


def _gray(img: np.ndarray) -> np.ndarray:
    g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    return np.repeat(g[..., None], 3, axis=2)


def degrade(img: np.ndarray, rng: np.random.Generator, ranges: DegradeRanges) -> tuple[np.ndarray, dict]:
    """The blind-restoration LQ pipeline of SPEC 1.4 on one (H, W, 3) image in [0,1]:
    blur -> bilinear downsample -> Gaussian noise -> JPEG -> bilinear resize back, then the
    optional colour jitter and grayscale of the colour task, then round and clip.

    Returns the LQ image (same size, on the 8-bit grid) and the scaled parameters used.
    """
    h, w = img.shape[:2]
    scale = h / REFERENCE_RESOLUTION
    p: dict = {}
    out = img.astype(np.float32)
    ksize = max(3, int(round(ranges.blur_kernel_size * scale)) | 1)
    sx = rng.uniform(*ranges.blur_sigma) * scale
    sy = rng.uniform(*ranges.blur_sigma) * scale if rng.random() < ranges.aniso_prob else sx
    theta = rng.uniform(-np.pi, np.pi)
    sx, sy = max(sx, 1e-3), max(sy, 1e-3)
    out = cv2.filter2D(out, -1, gaussian_kernel(ksize, sx, sy, theta), borderType=cv2.BORDER_REFLECT)
    r = max(1.0, rng.uniform(*ranges.downsample) * scale)
    small = (max(1, int(round(w / r))), max(1, int(round(h / r))))
    out = cv2.resize(out, small, interpolation=cv2.INTER_LINEAR)
    sigma = rng.uniform(*ranges.noise) / 255.0
    out = np.clip(out + rng.standard_normal(out.shape).astype(np.float32) * sigma, 0, 1)
    q = int(rng.integers(ranges.jpeg[0], ranges.jpeg[1] + 1))
    out = jpeg(out, q)
    out = cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)
    if rng.random() < ranges.colour_jitter_prob:  # colour task (SPEC 1.8): applied to the final LQ
        out, cj = _colour_jitter(np.clip(out, 0, 1), rng)
        p.update({f"jitter_{k}": float(v) for k, v in cj.items()})
    if rng.random() < ranges.gray_prob:
        out, p["gray"] = _gray(np.clip(out, 0, 1)), True
    p.update({"kernel_size": ksize, "sigma_x": sx, "sigma_y": sy, "theta": theta, "downsample": r,
              "noise_sigma": sigma * 255.0, "jpeg_quality": q})
    return to_uint8_grid(out), {k: (round(v, 4) if isinstance(v, float) else v) for k, v in p.items()}


# ----------------------------------------------------------------------------------------------
# The synthetic "capture": a mild, recorded degradation that makes GT quality vary like FFHQ's.


@dataclass(frozen=True)
class CaptureRanges:
    """Extremes of the capture mixture at severity 1 (512 px units; noise in x/255).

    family "train" mixes Gaussian blur, Gaussian noise and JPEG. family "unseen" mixes
    degradations the learned prior never sees in training: motion blur, bilinear
    down-and-up resizing and signal-dependent (Poisson-like) noise, then JPEG. family
    "restorer" mixes the flaws a codebook restorer's outputs show (used only for the prior's
    training data, so that restored faces cannot fool it): over-smoothing with posterised
    colours, codebook-like blockiness (each 4 x 4 block pulled towards its mean) and GAN-like
    texture (a fixed high-frequency pattern), then JPEG.
    """

    max_blur_sigma: float = 24.0
    max_noise: float = 50.0
    min_jpeg: int = 8


def capture(pristine: np.ndarray, severity: float, mix: np.ndarray, noise_field: np.ndarray,
            ranges: CaptureRanges, family: str = "train") -> tuple[np.ndarray, dict]:
    """Degrade a pristine render at `severity` in [0,1] along the mixture direction `mix` (3,).

    `noise_field` is a fixed standard-normal (H, W, 3) field, so the result is deterministic and
    monotone in severity. Returns the image on the 8-bit grid and its parameters.
    """
    h = pristine.shape[0]
    scale = h / REFERENCE_RESOLUTION
    t = float(np.clip(severity, 0.0, 1.0))
    out = pristine
    if family == "train":
        sigma = t * mix[0] * ranges.max_blur_sigma * scale
        if sigma > 0.05:
            out = cv2.GaussianBlur(out, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        noise = t * mix[1] * ranges.max_noise / 255.0
        out = np.clip(out + noise_field * noise, 0, 1)
        params = {"blur_sigma": sigma, "noise_sigma": noise * 255.0}
    elif family == "unseen":
        length = 1 + t * mix[0] * ranges.max_blur_sigma * scale * 2.5
        out = _motion_blur(out, length, angle=float(noise_field[0, 0, 0]) * 90.0)
        r = 1 + t * mix[0] * 3.0
        small = (max(2, int(round(h / r))), max(2, int(round(h / r))))
        out = cv2.resize(cv2.resize(out, small, interpolation=cv2.INTER_LINEAR), (h, h),
                         interpolation=cv2.INTER_LINEAR)
        peak = 1.0 / max(t * mix[1] * ranges.max_noise / 255.0, 1e-6) ** 2
        out = np.clip(out + noise_field * np.sqrt(np.clip(out, 0, 1) / peak), 0, 1)
        params = {"motion_length": length, "resize_factor": r, "poisson_peak": min(peak, 1e9)}
    elif family == "restorer":
        out, params = _restorer_artefacts(out, t, mix, noise_field, ranges, scale)
    else:
        raise ValueError(f"unknown capture family {family!r}; expected 'train', 'unseen' or 'restorer'")
    q = int(round(100 - t * mix[2] * (100 - ranges.min_jpeg)))
    if q < 100:
        out = jpeg(out, q)
    params["jpeg_quality"] = q
    return to_uint8_grid(out), {k: round(float(v), 4) for k, v in params.items()}


def _restorer_artefacts(img: np.ndarray, t: float, mix: np.ndarray, noise_field: np.ndarray,
                        ranges: CaptureRanges, scale: float) -> tuple[np.ndarray, dict]:
    """Restorer-like flaws at severity t along `mix` (3,): smoothing + posterisation, blockiness,
    GAN-like texture. Deterministic given the noise field; monotone in t."""
    h = img.shape[0]
    out = img
    smooth = t * mix[0] * ranges.max_blur_sigma * scale
    if smooth > 0.05:  # an edge-preserving smoothing (bilateral), then fewer colour levels
        out = cv2.bilateralFilter(out, d=0, sigmaColor=0.05 + 0.3 * t * mix[0], sigmaSpace=smooth)
        levels = max(2, int(round(256 / (1 + 31 * t * mix[0]))))
        out = np.round(out * (levels - 1)) / (levels - 1)
    block = t * mix[1]
    if block > 0:
        b = 4
        hb = h // b * b
        means = out[:hb, :hb].reshape(hb // b, b, hb // b, b, 3).mean((1, 3), keepdims=True)
        pulled = out[:hb, :hb].reshape(hb // b, b, hb // b, b, 3) * (1 - block) + means * block
        out = out.copy()
        out[:hb, :hb] = pulled.reshape(hb, hb, 3)
    texture = t * mix[2] * ranges.max_noise / 255.0
    if texture > 0:  # a 2 x 2 checkerboard-modulated pattern: the typical upsampling artefact of a GAN decoder
        checker = np.indices((h, h)).sum(0) % 2 * 2.0 - 1.0
        pattern = cv2.GaussianBlur(noise_field, (0, 0), 1.0) * checker[..., None]
        out = np.clip(out + texture * 2.0 * pattern, 0, 1)
    return out, {"smooth_sigma": smooth, "block_strength": block, "texture_sigma": texture * 255.0}


def _motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    if length <= 1.05:
        return img
    size = int(np.ceil(length)) | 1
    k = np.zeros((size, size), np.float32)
    c = size // 2
    d = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))]) * (length - 1) / 2
    cv2.line(k, (int(round(c - d[0])), int(round(c - d[1]))), (int(round(c + d[0])), int(round(c + d[1]))), 1.0, 1)
    return cv2.filter2D(img, -1, k / k.sum(), borderType=cv2.BORDER_REFLECT)
