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
