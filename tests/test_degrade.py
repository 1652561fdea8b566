from __future__ import annotations

import numpy as np
import pytest

from iqpfr.degrade import PRESETS, CaptureRanges, DegradeRanges, capture, degrade, gaussian_kernel
from iqpfr.synthfaces import render_face
from iqpfr.world import true_quality


@pytest.fixture(scope="module")
def face():
    return render_face(7, 64).image


def test_kernel_normalised_and_oriented():
    k = gaussian_kernel(21, 4.0, 1.0, 0.0)
    assert k.shape == (21, 21) and abs(k.sum() - 1) < 1e-5
    assert k[10, :].sum() > k[:, 10].sum()  # wider along x
    k90 = gaussian_kernel(21, 4.0, 1.0, np.pi / 2)
    np.testing.assert_allclose(k90, k.T, atol=1e-6)


def test_degrade_is_seeded_and_recorded(face):
    a, pa = degrade(face, np.random.default_rng([1, 2]), PRESETS["codeformer"])
    b, pb = degrade(face, np.random.default_rng([1, 2]), PRESETS["codeformer"])
    c, _ = degrade(face, np.random.default_rng([1, 3]), PRESETS["codeformer"])
    assert np.array_equal(a, b) and pa == pb and not np.array_equal(a, c)
    assert a.shape == face.shape
    np.testing.assert_array_equal(np.rint(a * 255), a * 255)  # on the 8-bit grid (rounded, clipped)


def test_ranges_scale_with_resolution(face):
    _, p = degrade(face, np.random.default_rng(0), PRESETS["codeformer"])
    s = 64 / 512
    assert 1.0 * s <= p["sigma_x"] <= 15.0 * s
    assert p["downsample"] >= 1.0 and p["downsample"] <= 30.0 * s + 1e-6
    assert p["kernel_size"] % 2 == 1 and p["kernel_size"] <= 41
    assert 30 <= p["jpeg_quality"] <= 80 and 0 <= p["noise_sigma"] <= 20


def test_default_params_are_the_codeformer_preset(root):
    from iqpfr.config import load_params
    from iqpfr.pipeline import degrade_ranges

    assert degrade_ranges(load_params(root / "params.yaml").degrade) == PRESETS["codeformer"]


def test_grayscale_and_colour_jitter(face):
    gray, p = degrade(face, np.random.default_rng(0), DegradeRanges(gray_prob=1.0))
    assert p["gray"] is True
    np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=2 / 255)
    _, p = degrade(face, np.random.default_rng(0), DegradeRanges(colour_jitter_prob=1.0))
    assert {"jitter_brightness", "jitter_hue"} <= set(p)


@pytest.mark.parametrize("family", ["train", "unseen", "restorer"])
def test_capture_quality_falls_with_severity(face, family):
    rng = np.random.default_rng(0)
    field = rng.standard_normal(face.shape).astype(np.float32)
    mix = np.array([1.0, 0.6, 0.5])
    qs = [true_quality(capture(face, t, mix, field, CaptureRanges(), family)[0], face) for t in (0.0, 0.3, 0.6, 1.0)]
    assert qs[0] > 0.97
    assert all(a > b for a, b in zip(qs, qs[1:])), qs


def test_unknown_capture_family(face):
    with pytest.raises(ValueError, match="unknown capture family"):
        capture(face, 0.5, np.ones(3), np.zeros_like(face), CaptureRanges(), "fog")


def test_restorer_family_is_deterministic_and_leaves_the_world_alone():
    from iqpfr.world import QualityDistribution, make_sample

    ranges, dist = CaptureRanges(), QualityDistribution(uniform=True)
    a = make_sample(0, "iqa_train", 3, 32, dist, ranges, "train", 0.5)
    b = make_sample(0, "iqa_train", 3, 32, dist, ranges, "train", 0.5)
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    families = {make_sample(0, "iqa_train", i, 32, dist, ranges, "train", 0.5)[2]["family"] for i in range(12)}
    assert families == {"train", "restorer"}
    # fraction 0 draws nothing extra: the sample is the one the world always rendered
    plain, off = make_sample(0, "train", 3, 32, dist, ranges), make_sample(0, "train", 3, 32, dist, ranges, "train", 0.0)
    assert np.array_equal(plain[0], off[0])
