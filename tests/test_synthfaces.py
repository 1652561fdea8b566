from __future__ import annotations

import numpy as np
import pytest

from iqpfr.synthfaces import TEMPLATE_5PT, render_face


def test_deterministic_and_distinct():
    a, b, c = render_face(3, 48), render_face(3, 48), render_face(4, 48)
    assert np.array_equal(a.image, b.image)
    assert np.array_equal(a.landmarks, b.landmarks)
    assert np.abs(a.image - c.image).mean() > 0.02


@pytest.mark.parametrize("res", [32, 64, 128])
def test_shape_range_and_landmarks(res):
    f = render_face([0, 2, 5], res)
    assert f.image.shape == (res, res, 3) and f.image.dtype == np.float32
    assert 0.0 <= f.image.min() and f.image.max() <= 1.0
    lm = f.landmarks / res
    # within a few percent of the template (pose jitter is small) and anatomically ordered
    assert np.abs(lm - TEMPLATE_5PT).max() < 0.08
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left before right
    assert lm[0, 1] < lm[2, 1] < lm[3, 1]  # eyes above nose above mouth


def test_geometry_is_resolution_independent():
    small, large = render_face(11, 64), render_face(11, 128)
    np.testing.assert_allclose(small.landmarks / 64, large.landmarks / 128, atol=0.01)


def test_faces_have_fine_detail():
    """Texture must exist for blur to remove: a face has more high-frequency energy than its blur."""
    import cv2

    img = render_face(1, 128).image
    blurred = cv2.GaussianBlur(img, (0, 0), 2.0)
    assert np.abs(img - blurred).mean() > 0.01


def test_bad_resolution():
    with pytest.raises(ValueError, match="resolution"):
        render_face(0, 8)


# The renderer's fast paths must draw the same pixels as the plain code they replaced: every trained
# model depends on the exact world it was rendered from (`dvc.lock` holds the worlds' hashes).


def _strands_one_by_one(cv, region, colour, rng, count, length):
    """The per-strand loop `_hair_strands` replaced, kept as the reference."""
    import cv2

    from iqpfr.synthfaces import _bezier

    ys, xs = np.nonzero(region > 0.5)
    layer, lmask = cv.mask(), cv.mask()
    for k in rng.integers(0, len(xs), count):
        p0 = np.array([xs[k], ys[k]]) / cv.n
        d = rng.normal(0, 1, 2)
        d = d / (np.linalg.norm(d) + 1e-8) * length * rng.uniform(0.5, 1.0)
        bend = rng.normal(0, 0.3, 2) * length
        curve = _bezier(p0, p0 + d / 2 + bend, p0 + d, 12)
        shade = rng.uniform(-1, 1)
        cv2.polylines(layer, [cv.pts(curve)], False, float(shade), 1, cv2.LINE_AA, shift=4)
        cv2.polylines(lmask, [cv.pts(curve)], False, 1.0, 1, cv2.LINE_AA, shift=4)
    lmask *= region
    col = np.clip(np.asarray(colour, np.float32) * (1 + 0.45 * layer[..., None]) + 0.06 * layer[..., None], 0, 1)
    cv.paint(lmask, col, 0.8)


@pytest.mark.parametrize("size", [128, 256])
def test_hair_strands_drawn_at_once_equal_one_by_one(size):
    from iqpfr.synthfaces import _Canvas, _hair_strands

    canvases = [_Canvas(size, np.random.default_rng(0)) for _ in range(2)]
    region = canvases[0].ellipse_mask([0.5, 0.35], [0.3, 0.2])
    colour = np.array([0.4, 0.25, 0.1])
    rngs = [np.random.default_rng(5), np.random.default_rng(5)]
    _hair_strands(canvases[0], region, colour, rngs[0], count=300, length=0.06)
    _strands_one_by_one(canvases[1], region, colour, rngs[1], count=300, length=0.06)
    assert np.array_equal(canvases[0].img, canvases[1].img) and canvases[0].img.max() > 0
    assert rngs[0].random() == rngs[1].random()  # the same draws: what follows in the face is unchanged


def test_iris_texture_on_its_window_equals_the_full_canvas():
    """`_eye` computes the iris texture on the iris's bounding box; painting through the iris mask
    reads nothing outside it, so the full-canvas texture gives the same pixels."""
    from iqpfr.synthfaces import _Canvas

    cv = _Canvas(256, np.random.default_rng(0))
    ic, r = np.array([0.41, 0.47]), 0.03
    iris = cv.ellipse_mask(ic, [r, r], soft=0.001)
    win = cv.support(iris)
    yy, xx = cv.grid
    full = np.sin(np.arctan2(yy - ic[1], xx - ic[0]) * 23 + 1.7) * np.hypot(yy - ic[1], xx - ic[0])
    part = np.sin(np.arctan2(yy[win] - ic[1], xx[win] - ic[0]) * 23 + 1.7) * np.hypot(yy[win] - ic[1], xx[win] - ic[0])
    assert np.array_equal(full[win], part)
    outside = np.ones_like(iris, bool)
    outside[win] = False
    assert iris[outside].max() <= 1e-4 < iris[win].max()
