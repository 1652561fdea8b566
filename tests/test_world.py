from __future__ import annotations

import numpy as np
import pytest

from iqpfr.degrade import CaptureRanges
from iqpfr.world import QualityDistribution, capture_at_quality, make_sample, true_quality


def test_true_quality_bounds():
    rng = np.random.default_rng(0)
    img = rng.random((48, 48, 3)).astype(np.float32)
    assert true_quality(img, img) == pytest.approx(1.0)
    assert 0.0 <= true_quality(rng.random((48, 48, 3)).astype(np.float32), img) < 0.2


@pytest.mark.parametrize("target", [0.3, 0.6, 0.85])
def test_capture_reaches_target(target):
    _, oracle, _ = make_sample(0, "train", 0, 64, QualityDistribution(uniform=True), CaptureRanges())
    img, rec = capture_at_quality(oracle, target, np.random.default_rng(1), CaptureRanges())
    assert rec["true_quality"] == pytest.approx(true_quality(img, oracle), abs=1e-5)
    assert abs(rec["true_quality"] - target) < 0.05


def test_samples_are_seeded_per_split():
    a = make_sample(0, "train", 3, 32, QualityDistribution(), CaptureRanges())
    b = make_sample(0, "train", 3, 32, QualityDistribution(), CaptureRanges())
    c = make_sample(0, "iqa_train", 3, 32, QualityDistribution(), CaptureRanges())
    assert np.array_equal(a[0], b[0]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])  # different split -> different face


def test_gt_distribution_is_ffhq_like():
    """Peak in the 0.8 bin, a low tail, a clean minority (the shape SPEC 7 asks for)."""
    dist = QualityDistribution()
    rng = np.random.default_rng(0)
    targets = np.array([dist.sample(rng) for _ in range(20000)])
    counts = np.histogram(targets, bins=10, range=(0, 1))[0] / len(targets)
    assert counts.argmax() == 8
    assert counts.min() >= 0.01  # every bin gets data for its score embedding
    assert 0.05 < (targets >= 0.9).mean() < 0.3
