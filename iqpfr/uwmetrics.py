"""No-reference underwater image quality judges, implemented from their papers, and the
classical enhancement baseline.

UCIQE (Yang & Sowmya, IEEE TIP 2015): a linear combination of the standard deviation of chroma,
the contrast of luminance and the mean saturation in CIELAB,
    UCIQE = 0.4680 sigma_c + 0.2745 con_l + 0.2576 mu_s.
Our conventions (the paper leaves the scaling open; re-implementations differ): L* / 100 and
C* / 100 (C* = sqrt(a*^2 + b*^2)) from scikit-image's CIELAB (D65); con_l = the 99th minus the 1st
percentile of L* / 100; saturation = C* / sqrt(C*^2 + L*^2) (0 for black).

UIQM (Panetta, Gao & Agaian, IEEE JOE 2016): UIQM = 0.0282 UICM + 0.2953 UISM + 3.5753 UIConM on
8-bit values.
    UICM  = -0.0268 sqrt(mu_RG^2 + mu_YB^2) + 0.1586 sqrt(s_RG^2 + s_YB^2), RG = R - G,
            YB = (R + G) / 2 - B, with alpha-trimmed means and variances (alpha = 0.1 each side);
    UISM  = sum_c lambda_c EME(Sobel magnitude of channel c x channel c), lambda = (0.299, 0.587, 0.114),
            EME = 2 / (k1 k2) sum over blocks of log(max / min) (blocks with min = 0 count 0);
    UIConM = logAMEE of the intensity: 1 / (k1 k2) sum over blocks of |c log c| with
            c = (max - min) / (max + min), computed with ordinary arithmetic in place of the PLIP
            operations (as common re-implementations do).
Blocks are `block` x `block` pixels (default 4, chosen for this project's 32-64 px images; the
paper's images are larger).

Both are "higher is better" and neither is differentiable here: they are reported beside the
prior, never trained on. The answers for constant grey images (0), pure colour casts and
contrast stretches are pinned by tests.
"""
from __future__ import annotations

import cv2
import numpy as np
from skimage.color import rgb2lab


def uciqe(img: np.ndarray) -> float:
    """UCIQE of an (H, W, 3) RGB image in [0,1]."""
    lab = rgb2lab(np.clip(img, 0, 1))
    L = lab[..., 0] / 100.0
    C = np.hypot(lab[..., 1], lab[..., 2]) / 100.0
    sigma_c = float(C.std())
    con_l = float(np.percentile(L, 99) - np.percentile(L, 1))
    denom = np.hypot(C, L)
    sat = np.divide(C, denom, out=np.zeros_like(C), where=denom > 1e-8)
    return 0.4680 * sigma_c + 0.2745 * con_l + 0.2576 * float(sat.mean())


def _trimmed(x: np.ndarray, alpha: float = 0.1) -> tuple[float, float]:
    """Alpha-trimmed mean and variance (alpha of the sorted values dropped at each end)."""
    x = np.sort(x.ravel())
    k = int(np.floor(alpha * len(x)))
    t = x[k:len(x) - k] if len(x) - 2 * k > 0 else x
    mu = float(t.mean())
    return mu, float(np.mean((t - mu) ** 2))


def _blocks(x: np.ndarray, block: int) -> np.ndarray:
    """(k1 * k2, block * block) view of the full blocks of a 2-D array."""
    h, w = (x.shape[0] // block) * block, (x.shape[1] // block) * block
    x = x[:h, :w]
    return x.reshape(h // block, block, w // block, block).transpose(0, 2, 1, 3).reshape(-1, block * block)


def uicm(rgb255: np.ndarray) -> float:
    r, g, b = (rgb255[..., i].astype(np.float64) for i in range(3))
    mu_rg, var_rg = _trimmed(r - g)
    mu_yb, var_yb = _trimmed((r + g) / 2 - b)
    return -0.0268 * np.hypot(mu_rg, mu_yb) + 0.1586 * np.sqrt(var_rg + var_yb)


def _eme(x: np.ndarray, block: int) -> float:
    blk = _blocks(x, block)
    mx, mn = blk.max(1), blk.min(1)
    ok = mn > 0
    vals = np.zeros(len(blk))
    vals[ok] = np.log(mx[ok] / mn[ok])
    return 2.0 * float(vals.mean())


def uism(rgb255: np.ndarray, block: int = 4) -> float:
    out = 0.0
    for lam, c in zip((0.299, 0.587, 0.114), range(3)):
        ch = rgb255[..., c].astype(np.float64)
        edges = np.hypot(cv2.Sobel(ch, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(ch, cv2.CV_64F, 0, 1, ksize=3))
        out += lam * _eme(edges / max(edges.max(), 1e-12) * ch, block)
    return out


def uiconm(rgb255: np.ndarray, block: int = 4) -> float:
    gray = rgb255.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    blk = _blocks(gray, block)
    mx, mn = blk.max(1), blk.min(1)
    s = mx + mn
    c = np.divide(mx - mn, s, out=np.zeros_like(s), where=s > 0)
    terms = np.zeros_like(c)
    nz = c > 0
    terms[nz] = np.abs(c[nz] * np.log(c[nz]))
    return float(terms.mean())


def uiqm(img: np.ndarray, block: int = 4) -> float:
    """UIQM of an (H, W, 3) RGB image in [0,1] (computed on the 8-bit scale)."""
    x = np.clip(np.rint(img * 255), 0, 255)
    return 0.0282 * uicm(x) + 0.2953 * uism(x, block) + 3.5753 * uiconm(x, block)


def classical_enhance(img: np.ndarray, clip_limit: float = 2.0, tiles: int = 4) -> np.ndarray:
    """The classical baseline: gray-world white balance, then CLAHE on CIELAB lightness (OpenCV).
    (H, W, 3) RGB in [0,1] -> same."""
    x = np.clip(img, 0, 1).astype(np.float32)
    means = x.reshape(-1, 3).mean(0)
    x = np.clip(x * (means.mean() / np.maximum(means, 1e-4)), 0, 1)
    u8 = np.rint(x * 255).astype(np.uint8)
    lab = cv2.cvtColor(u8, cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles)).apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
