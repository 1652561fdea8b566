"""A procedural face world: deterministic, seedable renders of aligned, frontal faces.

Public face data sets cannot be downloaded or shipped with this compendium, so the default
profile draws its own faces. Each face is a function of one integer seed: face shape, skin tone,
eyes (sclera, iris, pupil, highlight, lids, lashes), brows, nose, mouth and expression, hair
style and colour, optional glasses, ears, neck, clothing, background, a small pose jitter, and
fine texture (skin pores, freckles, hair strands) so that blur, noise and JPEG visibly remove
detail.

The layout follows an FFHQ-like aligned template (eyes on one row, the face centred). Five
landmarks per face (eye centres, nose tip, mouth corners) are returned in pixel coordinates of
the output image; they define the aligned template used elsewhere (`TEMPLATE_5PT`).

Renders are supersampled (drawn at >= 512 px and area-downsampled) so edges are anti-aliased at
every output size from 64 to 512 px.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

# Canonical five-point template in unit coordinates (x right, y down) before pose jitter:
# left eye, right eye (image left/right), nose tip, left and right mouth corners.
TEMPLATE_5PT = np.array(
    [[0.385, 0.475], [0.615, 0.475], [0.500, 0.600], [0.425, 0.700], [0.575, 0.700]],
    dtype=np.float64,
)

SKIN_TONES = np.array(  # RGB in [0,1], light to dark; a face samples between neighbours
    [[0.98, 0.86, 0.76], [0.95, 0.78, 0.66], [0.87, 0.67, 0.52], [0.76, 0.55, 0.40],
     [0.60, 0.42, 0.29], [0.45, 0.31, 0.21], [0.33, 0.22, 0.15]]
)
HAIR_COLOURS = np.array(
    [[0.08, 0.06, 0.05], [0.22, 0.14, 0.08], [0.40, 0.26, 0.14], [0.62, 0.45, 0.25],
     [0.85, 0.70, 0.45], [0.55, 0.22, 0.10], [0.70, 0.70, 0.70], [0.92, 0.92, 0.90]]
)
IRIS_COLOURS = np.array(
    [[0.30, 0.18, 0.08], [0.45, 0.30, 0.12], [0.25, 0.45, 0.70], [0.30, 0.55, 0.40],
     [0.50, 0.55, 0.55], [0.15, 0.10, 0.06]]
)
HAIR_STYLES = ("short", "long", "bun", "buzz", "curly", "side_part")


@dataclass(frozen=True)
class Face:
    """One rendered face.

    image: (R, R, 3) float32 RGB in [0, 1].
    landmarks: (5, 2) float64 pixel coordinates (x, y) of eye centres, nose tip, mouth corners.
    attributes: the sampled attributes that are useful to record (style names, flags).
    """

    image: np.ndarray
    landmarks: np.ndarray
    attributes: dict


class _Canvas:
    """A float RGB canvas with helpers that paint soft-edged shapes given in unit coordinates."""

    def __init__(self, size: int, rng: np.random.Generator):
        self.n = size
        self.rng = rng
        self.img = np.zeros((size, size, 3), np.float32)
        self.grid = np.mgrid[0:size, 0:size].astype(np.float32) / size  # (2, n, n): y, x

    def pts(self, xy: np.ndarray) -> np.ndarray:
        """Unit coordinates (..., 2) -> fixed-point int32 pixels for cv2 with shift=4."""
        return np.round(np.asarray(xy) * self.n * 16).astype(np.int32)

    def mask(self) -> np.ndarray:
        return np.zeros((self.n, self.n), np.float32)

    def soften(self, m: np.ndarray, sigma_unit: float) -> np.ndarray:
        s = max(sigma_unit * self.n, 0.3)
        return cv2.GaussianBlur(m, (0, 0), s)

    def poly_mask(self, xy: np.ndarray, soft: float = 0.002) -> np.ndarray:
        m = self.mask()
        cv2.fillPoly(m, [self.pts(xy)], 1.0, cv2.LINE_AA, shift=4)
        return self.soften(m, soft)

    def ellipse_mask(self, c, axes, angle=0.0, soft=0.002) -> np.ndarray:
        return self.poly_mask(ellipse(c, axes, angle), soft)

    @staticmethod
    def support(m: np.ndarray) -> tuple[slice, slice] | None:
        """The bounding box (rows, cols) of mask m's support (values above 1e-4), None if empty."""
        rows = np.flatnonzero(m.max(1) > 1e-4)
        cols = np.flatnonzero(m.max(0) > 1e-4)
        if len(rows) == 0:
            return None
        return np.s_[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]

    def paint(self, m: np.ndarray, colour, alpha: float = 1.0) -> None:
        """Alpha-composite `colour` (RGB triple or (n, n, 3) image) through mask m in [0,1].

        Only the bounding box of the mask's support is touched (most shapes are small).
        """
        win = self.support(m)
        if win is None:
            return
        a = (np.clip(m[win], 0, 1) * alpha)[..., None]
        c = np.asarray(colour, np.float32)
        c = c[win] if c.ndim == 3 else c
        self.img[win] = self.img[win] * (1 - a) + c * a

    def stroke(self, xy, colour, width: float, alpha: float = 1.0, soft=0.0) -> None:
        """Draw one polyline (k, 2) or several (a list of them) in one composite."""
        m = self.mask()
        w = max(int(round(width * self.n)), 1)
        lines = [self.pts(p) for p in xy] if isinstance(xy, list) else [self.pts(xy)]
        cv2.polylines(m, lines, False, 1.0, w, cv2.LINE_AA, shift=4)
        if soft > 0:
            m = self.soften(m, soft)
        self.paint(m, colour, alpha)

    def noise(self, sigma_unit: float, amp: float) -> np.ndarray:
        """Band-limited noise field (n, n) with std about `amp`."""
        f = self.rng.standard_normal((self.n, self.n)).astype(np.float32)
        if sigma_unit > 0:
            f = cv2.GaussianBlur(f, (0, 0), max(sigma_unit * self.n, 0.3))
        return f / (f.std() + 1e-8) * amp


def ellipse(c, axes, angle: float = 0.0, n: int = 64, t0=0.0, t1=2 * np.pi) -> np.ndarray:
    """Points (n, 2) on an ellipse (or an arc from t0 to t1) in unit coordinates."""
    t = np.linspace(t0, t1, n)
    x, y = axes[0] * np.cos(t), axes[1] * np.sin(t)
    ca, sa = np.cos(angle), np.sin(angle)
    return np.stack([c[0] + ca * x - sa * y, c[1] + sa * x + ca * y], -1)


def _bezier(p0, p1, p2, n: int = 24) -> np.ndarray:
    """Points (n, 2) on the quadratic Bezier curve p0 -> p2 with control point p1 (unit coordinates);
    points (k, 2) broadcast with leading axes, e.g. (m, 1, 2) -> (m, n, 2)."""
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = map(np.asarray, (p0, p1, p2))
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t ** 2 * p2


def _mix(palette: np.ndarray, rng: np.random.Generator, jitter: float = 0.03) -> np.ndarray:
    i = rng.uniform(0, len(palette) - 1)
    lo = int(np.floor(i))
    hi = min(lo + 1, len(palette) - 1)
    c = palette[lo] * (1 - (i - lo)) + palette[hi] * (i - lo)
    return np.clip(c + rng.normal(0, jitter, 3), 0, 1)


def _face_outline(cx, cy, w, h, jaw, chin) -> np.ndarray:
    """A face contour: a superellipse whose lower half narrows towards the chin."""
    t = np.linspace(0, 2 * np.pi, 160)
    s, c = np.sin(t), np.cos(t)
    x = w * np.sign(c) * np.abs(c) ** 0.85
    lower = np.clip(s, 0, 1)
    x = x * (1 - jaw * lower ** 2.2)
    y = h * np.sign(s) * np.abs(s) ** (0.95 if chin else 1.1)
    return np.stack([cx + x, cy + y], -1)


def _background(cv: _Canvas, rng: np.random.Generator) -> None:
    c0, c1 = rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.95, 3)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = cv.grid
    g = np.clip(0.5 + (xx - 0.5) * np.cos(ang) + (yy - 0.5) * np.sin(ang), 0, 1)[..., None]
    cv.img = (c0 * (1 - g) + c1 * g).astype(np.float32)
    kind = rng.integers(3)
    if kind == 1:  # bokeh discs
        for _ in range(rng.integers(4, 12)):
            col = np.clip(rng.uniform(0.3, 1.0, 3), 0, 1)
            m = cv.ellipse_mask(rng.uniform(0, 1, 2), [rng.uniform(0.03, 0.12)] * 2, soft=0.01)
            cv.paint(m, col, rng.uniform(0.15, 0.4))
    elif kind == 2:  # blotchy wall
        cv.img = cv.img * (1 + cv.noise(0.05, 0.08)[..., None])
    cv.img = cv.img * (1 + cv.noise(0.002, 0.02)[..., None])


def _hair_colour_field(cv: _Canvas, colour, rng) -> np.ndarray:
    """Hair colour image with strand-like streaks (n, n, 3)."""
    base = np.broadcast_to(np.asarray(colour, np.float32), (cv.n, cv.n, 3)).copy()
    streak = cv.rng.standard_normal((cv.n, cv.n)).astype(np.float32)
    streak = cv2.GaussianBlur(streak, (1, 0), sigmaX=0.3, sigmaY=max(0.02 * cv.n, 1))
    streak /= streak.std() + 1e-8
    return np.clip(base * (1 + 0.18 * streak[..., None]) + 0.02 * streak[..., None], 0, 1)


def _hair_strands(cv: _Canvas, region: np.ndarray, colour, rng, count: int, length: float) -> None:
    """Thin curved strands inside `region` (mask), lighter and darker than the hair colour.

    The random draws stay per strand, in the order every earlier world was rendered with; the
    curves are then evaluated for all strands at once (the same arithmetic element by element, so
    the same pixels, about three times faster than a Python loop of small array operations)."""
    ys, xs = np.nonzero(region > 0.5)
    if len(xs) == 0:
        return
    layer, lmask = cv.mask(), cv.mask()
    idx = rng.integers(0, len(xs), count)
    d, bend, shade = np.empty((count, 2)), np.empty((count, 2)), np.empty(count)
    for j in range(count):
        dj = rng.normal(0, 1, 2)
        d[j] = dj / (np.linalg.norm(dj) + 1e-8) * length * rng.uniform(0.5, 1.0)
        bend[j] = rng.normal(0, 0.3, 2) * length
        shade[j] = rng.uniform(-1, 1)
    p0 = (np.stack([xs[idx], ys[idx]], 1) / cv.n)[:, None]  # (count, 1, 2)
    d, bend = d[:, None], bend[:, None]
    curves = cv.pts(_bezier(p0, p0 + d / 2 + bend, p0 + d, 12))  # (count, 12, 2)
    for j in range(count):
        cv2.polylines(layer, [curves[j]], False, float(shade[j]), 1, cv2.LINE_AA, shift=4)
    cv2.polylines(lmask, list(curves), False, 1.0, 1, cv2.LINE_AA, shift=4)
    lmask *= region
    col = np.clip(np.asarray(colour, np.float32) * (1 + 0.45 * layer[..., None]) + 0.06 * layer[..., None], 0, 1)
    cv.paint(lmask, col, 0.8)


def _eye(cv: _Canvas, c, width, open_, iris_col, lid_col, gaze, rng) -> None:
    top = _bezier([c[0] - width, c[1]], [c[0], c[1] - 1.2 * open_], [c[0] + width, c[1]])
    bot = _bezier([c[0] + width, c[1]], [c[0], c[1] + 0.7 * open_], [c[0] - width, c[1]])
    almond = np.concatenate([top, bot])
    eye_m = cv.poly_mask(almond, 0.0015)
    cv.paint(eye_m, [0.93, 0.91, 0.88])
    r = width * 0.55
    ic = np.array([c[0] + gaze[0] * width * 0.3, c[1] + gaze[1] * open_ * 0.2])
    iris = cv.ellipse_mask(ic, [r, r], soft=0.001) * eye_m
    # iris texture: radial streaks around the pupil, computed where the iris is (paint reads no more)
    spokes, phase = rng.integers(18, 30), rng.uniform(0, 6)
    win = cv.support(iris)
    if win is not None:
        yy, xx = cv.grid[(slice(None), *win)]
        ang = np.arctan2(yy - ic[1], xx - ic[0])
        rad = np.hypot(yy - ic[1], xx - ic[0]) / r
        streak = np.sin(ang * spokes + phase) * 0.12
        shade = np.clip(1 + streak - 0.35 * np.clip(rad - 0.6, 0, 1), 0, 1.2)
        texture = np.zeros((cv.n, cv.n, 3), np.float32)
        texture[win] = np.clip(shade[..., None] * np.asarray(iris_col, np.float32), 0, 1)
        cv.paint(iris, texture)
    cv.paint(cv.ellipse_mask(ic, [r * 0.42] * 2, soft=0.001) * eye_m, [0.03, 0.03, 0.03])
    hl = ic + np.array([-0.35 * r, -0.35 * r])
    cv.paint(cv.ellipse_mask(hl, [r * 0.18] * 2, soft=0.0008) * eye_m, [1, 1, 1], 0.9)
    cv.stroke(top, lid_col, 0.007, 0.9)  # upper lid line
    cv.stroke(bot, lid_col, 0.0025, 0.35)
    lashes = []
    for k in range(3, len(top) - 2, 3):
        p = top[k]
        d = np.array([(p[0] - c[0]) * 0.15, -0.012 - rng.uniform(0, 0.006)])
        lashes.append(np.stack([p, p + d]))
    cv.stroke(lashes, lid_col, 0.0025, 0.7)
    crease = _bezier([c[0] - width * 0.9, c[1] - open_ * 0.6], [c[0], c[1] - open_ * 2.0],
                     [c[0] + width * 0.9, c[1] - open_ * 0.6])
    cv.stroke(crease, lid_col, 0.003, 0.25, soft=0.002)


def _mouth(cv: _Canvas, lm_l, lm_r, smile, open_, lip_col, rng) -> None:
    cx = (lm_l[0] + lm_r[0]) / 2
    y = lm_l[1]
    half = (lm_r[0] - lm_l[0]) / 2
    upper_top = np.concatenate([
        _bezier(lm_l, [cx - half * 0.5, y - 0.03], [cx, y - 0.018], 12),
        _bezier([cx, y - 0.018], [cx + half * 0.5, y - 0.03], lm_r, 12)])
    seam = _bezier(lm_r, [cx, y + smile * 0.04 + open_ * 0.5], lm_l, 24)
    lower_seam = _bezier(lm_l, [cx, y + smile * 0.04 + open_ * 1.5], lm_r, 24)
    lower_bot = _bezier(lm_r, [cx, y + 0.045 + smile * 0.03 + open_ * 1.7], lm_l, 24)
    if open_ > 0.002:
        inner = np.concatenate([seam[::-1], lower_seam[::-1][::-1]])
        inner_m = cv.poly_mask(np.concatenate([seam, lower_seam]), 0.001)
        cv.paint(inner_m, [0.25, 0.06, 0.06])
        teeth = cv.poly_mask(np.concatenate([seam, _bezier(lm_l, [cx, y + smile * 0.04 + open_ * 1.0], lm_r, 24)]), 0.001)
        cv.paint(teeth * inner_m, [0.95, 0.93, 0.88])
        del inner
    cv.paint(cv.poly_mask(np.concatenate([upper_top, seam]), 0.0015), lip_col * 0.85)
    cv.paint(cv.poly_mask(np.concatenate([lower_seam, lower_bot]), 0.0015), lip_col)
    cv.stroke(seam if open_ <= 0.002 else seam, lip_col * 0.45, 0.004, 0.8)
    hl = cv.ellipse_mask([cx, y + 0.02 + open_ * 1.5], [half * 0.35, 0.006], soft=0.003)
    cv.paint(hl, [1, 1, 1], 0.25)


def render_face(seed: int | Sequence[int], resolution: int = 64) -> Face:
    """Render the face of `seed` at `resolution` pixels (square).

    Returns a Face whose image is (R, R, 3) float32 RGB in [0,1]; the same seed always gives
    the same face at a given resolution (the geometry is resolution independent).
    """
    if not 16 <= resolution <= 2048:
        raise ValueError(f"resolution must be in [16, 2048], got {resolution}")
    rng = np.random.default_rng(seed)
    ss = max(2, int(np.ceil(256 / resolution)))
    texture_seed = ([seed] if isinstance(seed, int) else list(seed)) + [7]
    cv = _Canvas(resolution * ss, np.random.default_rng(texture_seed))

    skin = _mix(SKIN_TONES, rng)
    hair_col = HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))] * rng.uniform(0.85, 1.15)
    hair_col = np.clip(hair_col, 0, 1)
    style = HAIR_STYLES[rng.integers(len(HAIR_STYLES))]
    glasses = rng.random() < 0.25
    freckles = rng.random() < 0.2
    beard = rng.random() < 0.15
    smile = rng.uniform(-0.15, 1.0)
    mouth_open = max(0.0, rng.uniform(-0.01, 0.012)) if smile > 0.4 else 0.0
    fw, fh = rng.uniform(0.20, 0.25), rng.uniform(0.27, 0.31)
    fc = np.array([0.5, 0.53 + rng.uniform(-0.01, 0.01)])
    jaw = rng.uniform(0.15, 0.40)
    eye_w, eye_open = rng.uniform(0.046, 0.058), rng.uniform(0.016, 0.024)
    gaze = rng.uniform(-1, 1, 2)

    _background(cv, rng)

    # clothing, neck and long hair behind the head
    shirt = rng.uniform(0.05, 0.9, 3)
    cv.paint(cv.ellipse_mask([0.5, 1.12], [0.42, 0.28]), shirt)
    if style == "long":
        back = np.concatenate([ellipse(fc + [0, -0.05], [fw + 0.07, fh + 0.04], n=64, t0=np.pi, t1=2 * np.pi),
                               [[fc[0] + fw + 0.09, 0.95], [fc[0] - fw - 0.09, 0.95]]])
        cv.paint(cv.poly_mask(back, 0.004), _hair_colour_field(cv, hair_col * 0.8, rng))
    neck = np.array([[0.5 - 0.085, 0.7], [0.5 + 0.085, 0.7], [0.5 + 0.1, 0.93], [0.5 - 0.1, 0.93]])
    cv.paint(cv.poly_mask(neck, 0.004), skin * 0.78)

    # ears, face, shading, texture
    for sx in (-1, 1):
        cv.paint(cv.ellipse_mask([fc[0] + sx * (fw - 0.005), 0.50], [0.028, 0.05], soft=0.003), skin * 0.9)
    outline = _face_outline(fc[0], fc[1], fw, fh, jaw, rng.random() < 0.5)
    face_m = cv.poly_mask(outline, 0.003)
    yy, xx = cv.grid
    light = rng.uniform(-0.6, 0.6)
    shade = 1 - 0.22 * np.clip(((xx - fc[0]) / fw) ** 2 + ((yy - fc[1]) / fh) ** 2, 0, 1.3)
    shade = shade + 0.08 * light * (xx - fc[0]) / fw
    pores = cv.noise(0.0015, 0.022) + cv.noise(0.008, 0.02)
    skin_img = np.clip(skin * (shade + pores)[..., None], 0, 1)
    cv.paint(face_m, skin_img)
    for sx in (-1, 1):  # cheeks
        cv.paint(cv.ellipse_mask([fc[0] + sx * fw * 0.55, 0.6], [0.05, 0.035], soft=0.02) * face_m,
                 [0.9, 0.4, 0.4], rng.uniform(0.05, 0.2))
    if freckles:
        for _ in range(int(rng.integers(20, 50))):
            p = [fc[0] + rng.normal(0, fw * 0.45), 0.56 + rng.normal(0, 0.03)]
            cv.paint(cv.ellipse_mask(p, [0.0025] * 2, soft=0.0008) * face_m, skin * 0.6, 0.6)
    if beard:
        chin = np.concatenate([ellipse(fc, [fw * 0.98, fh * 0.98], n=48, t0=0.05 * np.pi, t1=0.95 * np.pi)])
        bm = cv.poly_mask(np.concatenate([chin, [[fc[0] - fw * 0.6, 0.66], [fc[0] + fw * 0.6, 0.66]]][::-1]), 0.01)
        cv.paint(bm * face_m * (0.6 + cv.noise(0.001, 0.4)), hair_col, 0.85)

    # eyes and brows, placed on the template
    lm = TEMPLATE_5PT.copy()
    lm[:2, 0] = 0.5 + (lm[:2, 0] - 0.5) * rng.uniform(0.93, 1.06)
    lid_col = np.clip(hair_col * 0.5, 0, 0.3)
    iris_col = IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))]
    brow_col = np.clip(hair_col * 0.8, 0, 1)
    brow_arch, brow_w = rng.uniform(0.006, 0.02), rng.uniform(0.006, 0.011)
    for k, sx in ((0, -1), (1, 1)):
        c = lm[k]
        _eye(cv, c, eye_w, eye_open, iris_col, lid_col, gaze, rng)
        inner, outer = c[0] - sx * eye_w * 0.9, c[0] + sx * eye_w * 1.2
        by = c[1] - 0.045 - rng.uniform(0, 0.006)
        brow = _bezier([inner, by + 0.004], [c[0], by - brow_arch], [outer, by + 0.006])
        cv.stroke(brow, brow_col, brow_w, 0.85, soft=0.0015)
        hairs = [np.stack([p, p + [sx * 0.006, -0.004]]) for p in brow[::2]]
        cv.stroke(hairs, brow_col * 0.7, 0.002, 0.6)

    # nose: bridge shadow, tip highlight, nostrils
    nt = lm[2]
    side = 1 if light < 0 else -1
    bridge = _bezier([0.5 + side * 0.015, 0.5], [0.5 + side * 0.022, 0.56], [nt[0] + side * 0.02, nt[1] - 0.008])
    cv.stroke(bridge, skin * 0.6, 0.008, 0.35, soft=0.004)
    cv.paint(cv.ellipse_mask(nt - [0, 0.006], [0.016, 0.012], soft=0.004), np.clip(skin * 1.15, 0, 1), 0.5)
    for sx in (-1, 1):
        cv.paint(cv.ellipse_mask([nt[0] + sx * 0.014, nt[1] + 0.006], [0.007, 0.004], sx * 0.3, soft=0.0015),
                 skin * 0.3, 0.85)
    ala = _bezier([nt[0] - 0.026, nt[1] - 0.004], [nt[0], nt[1] + 0.02], [nt[0] + 0.026, nt[1] - 0.004])
    cv.stroke(ala, skin * 0.55, 0.003, 0.4, soft=0.002)

    # mouth with expression
    half = rng.uniform(0.06, 0.085)
    lm[3] = [0.5 - half, lm[3, 1] - 0.012 * smile]
    lm[4] = [0.5 + half, lm[4, 1] - 0.012 * smile]
    lip = np.clip(skin * np.array([0.95, 0.6, 0.6]) * rng.uniform(0.8, 1.05), 0, 1)
    _mouth(cv, lm[3], lm[4], smile, mouth_open, lip, rng)

    # hair in front
    hair_img = _hair_colour_field(cv, hair_col, rng)
    top = fc[1] - fh
    if style in ("short", "long", "side_part", "bun", "curly"):
        cap = ellipse([fc[0], fc[1] - 0.02], [fw + 0.03, fh + 0.05], n=64, t0=np.pi, t1=2 * np.pi)
        part = rng.uniform(-0.5, 0.5) if style == "side_part" else 0.0
        fringe_y = top + rng.uniform(0.07, 0.13)
        fringe = _bezier([fc[0] + fw + 0.02, fc[1] - 0.06], [fc[0] + part * fw, fringe_y - 0.05],
                         [fc[0] - fw - 0.02, fc[1] - 0.06])
        hair_m = cv.poly_mask(np.concatenate([cap, fringe]), 0.003)
        if style == "curly":
            for _ in range(60):
                a = rng.uniform(np.pi, 2 * np.pi)
                p = [fc[0] + np.cos(a) * (fw + 0.03), fc[1] - 0.02 + np.sin(a) * (fh + 0.05)]
                hair_m = np.maximum(hair_m, cv.ellipse_mask(p, [rng.uniform(0.02, 0.04)] * 2, soft=0.002))
        if style == "bun":
            hair_m = np.maximum(hair_m, cv.ellipse_mask([fc[0], top - 0.06], [0.07, 0.06], soft=0.003))
        cv.paint(hair_m, hair_img)
        _hair_strands(cv, hair_m, hair_col, rng, count=int(900 * cv.n / 512), length=0.06)
    else:  # buzz: a thin textured cap hugging the skull
        cap = ellipse([fc[0], fc[1] - 0.01], [fw + 0.006, fh + 0.01], n=64, t0=np.pi, t1=2 * np.pi)
        inner = _bezier([fc[0] + fw, fc[1] - 0.08], [fc[0], top + 0.03], [fc[0] - fw, fc[1] - 0.08])
        hair_m = cv.poly_mask(np.concatenate([cap, inner]), 0.003)
        cv.paint(hair_m * (0.5 + cv.noise(0.001, 0.25)), hair_col, 0.9)

    if glasses:
        frame = rng.uniform(0, 0.4, 3)
        rr = eye_w * rng.uniform(1.35, 1.6)
        for k in (0, 1):
            rim = ellipse(lm[k], [rr, rr * rng.uniform(0.75, 0.95)], n=64)
            cv.paint(cv.poly_mask(rim, 0.002), [0.8, 0.85, 0.9], 0.12)
            cv.stroke(rim, frame, 0.006)
        cv.stroke(_bezier(lm[0] + [rr, -0.005], [0.5, lm[0, 1] - 0.02], lm[1] - [rr, 0.005]), frame, 0.005)
        for k, sx in ((0, -1), (1, 1)):
            cv.stroke(np.stack([lm[k] + [sx * rr, -0.005], [fc[0] + sx * fw, lm[k, 1] - 0.01]]), frame, 0.005)

    # gentle global vignette, then pose jitter and downsampling
    cv.img *= (1 - 0.15 * ((xx - 0.5) ** 2 + (yy - 0.5) ** 2))[..., None]
    angle = rng.uniform(-6, 6)
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-0.015, 0.015, 2) * cv.n
    M = cv2.getRotationMatrix2D((cv.n / 2, cv.n / 2), angle, scale)
    M[:, 2] += shift
    img = cv2.warpAffine(cv.img, M, (cv.n, cv.n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
    pts = np.c_[lm * cv.n, np.ones(5)] @ M.T  # (5, 2) in supersampled pixels
    landmarks = (pts + 0.5) / ss - 0.5  # area downsampling maps pixel centres this way
    attrs = {"hair_style": style, "glasses": bool(glasses), "freckles": bool(freckles),
             "beard": bool(beard), "smile": round(float(smile), 3), "pose_deg": round(float(angle), 2)}
    return Face(np.clip(img, 0, 1).astype(np.float32), landmarks, attrs)
