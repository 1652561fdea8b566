from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from iqpfr import iqanet, quality

CALIBRATION = {  # pyiqa's published NIQE values and the per-image tolerance we hold to
    "I03": (15.6538, 3e-3), "I04": (3.6549, 1e-3), "I06": (3.2342, 1e-3), "I08": (3.1921, 1e-3), "I19": (9.0722, 1e-3),
}


def test_niqe_calibration():
    """Our shipped NIQE parameters reproduce pyiqa's published calibration values (PROVENANCE.md)."""
    import pyiqa

    folder = Path(pyiqa.__file__).resolve().parent.parent / "ResultsCalibra" / "dist_dir"
    if not folder.is_dir():
        pytest.skip(f"pyiqa calibration images not installed at {folder}")
    metric = quality.make_metric("niqe")
    from pyiqa.utils import imread2tensor

    for name, (expected, tol) in CALIBRATION.items():
        value = float(metric(imread2tensor(str(folder / f"{name}.bmp")).unsqueeze(0)))
        assert value == pytest.approx(expected, abs=tol), name
    assert metric.lower_better


def test_niqe_upsamples_small_images():
    m = quality.make_metric("niqe", min_size=128)
    assert m.min_size == 128
    assert torch.isfinite(m(torch.rand(1, 3, 32, 32))).all()


def test_missing_weights_fail_fast():
    t0 = time.time()
    with pytest.raises(quality.MissingWeightsError, match=r"(weights file|could not be built)"):
        quality.make_metric("musiq", offline=True)
    assert time.time() - t0 < 30  # no minute-long retries


def _fake_metric(name, lower_better, fn):
    return quality.Metric(name, lower_better, "h", torch.nn.Identity() if fn is None else fn)


def test_norm_stats_direction_and_ensemble(tmp_path):
    metrics = {"up": _fake_metric("up", False, None), "down": _fake_metric("down", True, None)}
    raw = {"up": np.array([1.0, 2.0, 3.0]), "down": np.array([30.0, 20.0, 10.0])}
    st = quality.NormStats.fit(raw, metrics, ["up", "down"])
    np.testing.assert_allclose(st.normalise("up", raw["up"]), [0, 0.5, 1])
    np.testing.assert_allclose(st.normalise("down", raw["down"]), [0, 0.5, 1])  # flipped
    np.testing.assert_allclose(st.ensemble_score(raw), [0, 0.5, 1])
    st.save(tmp_path / "s.json")
    assert quality.NormStats.load(tmp_path / "s.json") == st
    with pytest.raises(ValueError, match="same score"):
        quality.NormStats.fit({"up": np.ones(3)}, metrics, ["up"])


def test_score_bins():
    np.testing.assert_array_equal(quality.score_bin([0.0, 0.05, 0.95, 1.0, 0.7]), [0, 0, 9, 9, 7])


class _CountingModule(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += len(x)
        return x.mean((1, 2, 3))


def test_score_cache_scores_only_what_changed(tmp_path):
    ds = torch.utils.data.TensorDataset(torch.rand(5, 3, 8, 8), torch.arange(5))
    mod = _CountingModule()
    metric = quality.Metric("mean", False, "w1", mod)
    cache = quality.ScoreCache(tmp_path / "c.jsonl")
    shas = [f"s{i}" for i in range(5)]
    first, n1 = quality.score_images(ds, shas, metric, 2, cache, 8)
    again, n2 = quality.score_images(ds, shas, metric, 2, quality.ScoreCache(tmp_path / "c.jsonl"), 8)
    assert (n1, n2) == (5, 0) and mod.calls == 5
    np.testing.assert_allclose(first, again)
    _, n3 = quality.score_images(ds, shas[:4] + ["new"], metric, 2, cache, 8)
    assert n3 == 1
    other = quality.Metric("mean", False, "w2", mod)  # new weights -> new keys
    _, n4 = quality.score_images(ds, shas, other, 2, cache, 8)
    assert n4 == 5


def test_corrupt_score_cache_entries_are_recomputed(tmp_path):
    """A line cut by a kill, a changed digit and a hand-edited value are not trusted: exactly those
    images are scored again, and the others come from the cache."""
    ds = torch.utils.data.TensorDataset(torch.rand(5, 3, 8, 8), torch.arange(5))
    mod = _CountingModule()
    metric = quality.Metric("mean", False, "w1", mod)
    path = tmp_path / "c.jsonl"
    shas = [f"s{i}" for i in range(5)]
    first, _ = quality.score_images(ds, shas, metric, 2, quality.ScoreCache(path), 8)
    lines = path.read_text().splitlines(keepends=True)
    assert len(lines) == 5
    rec1 = json.loads(lines[1])
    lines[1] = lines[1].replace(json.dumps(rec1["v"]), json.dumps(rec1["v"] + 0.25))  # hand edit, old checksum
    lines[2] = lines[2].replace('"c": "', '"c": "0')  # damaged checksum
    lines[4] = lines[4][: len(lines[4]) // 2]  # cut by a kill
    path.write_text("".join(lines))
    cache = quality.ScoreCache(path)
    assert cache.dropped == 3 and len(cache.values) == 2
    mod.calls = 0
    again, n = quality.score_images(ds, shas, metric, 2, cache, 8)
    assert n == 3 and mod.calls == 3
    np.testing.assert_allclose(again, first)
    reread = quality.ScoreCache(path)  # the new records were not glued to the cut line
    assert len(reread.values) == 5 and reread.dropped == 3


def test_differentiable_quality_gradient(tmp_path):
    torch.manual_seed(0)
    net = iqanet.IqaNet(iqanet.IqaNetConfig(width=4))
    iqanet.save(tmp_path / "p.pt", net, {})
    metric = quality.make_metric("learned", learned_path=tmp_path / "p.pt")
    x0 = torch.rand(8, 3, 32, 32)
    raw = metric(x0).detach().numpy()
    st = quality.NormStats.fit({"learned": raw * np.array([0.9] * 4 + [1.1] * 4)}, {"learned": metric}, ["learned"])
    q = quality.DifferentiableQuality([metric], st)
    x = x0.clone().requires_grad_(True)
    out = q(x)
    assert out.shape == (8,) and (out >= 0).all() and (out <= 1).all()
    (1 - out).clamp(min=0).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in q.parameters())  # the prior itself is frozen


def test_differentiable_quality_refuses_non_differentiable():
    st = quality.NormStats({"piqe": {"min": 0, "max": 1, "lower_better": True, "weights_hash": "h"}}, ["piqe"])
    m = quality.Metric("piqe", True, "h", torch.nn.Identity(), differentiable=False)
    with pytest.raises(ValueError, match="not differentiable"):
        quality.DifferentiableQuality([m], st)
