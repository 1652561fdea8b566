from __future__ import annotations

import numpy as np
import pytest
import torch

from iqpfr import iqanet


def _tiny():
    torch.manual_seed(0)
    return iqanet.IqaNet(iqanet.IqaNetConfig(width=4))


def test_shapes_and_range():
    net = _tiny()
    x = torch.rand(3, 3, 32, 32)
    assert net(x).shape == (3,)
    s = net.score(x)
    assert s.shape == (3,) and (s >= 0).all() and (s <= 1).all()
    assert net(torch.rand(2, 3, 48, 48)).shape == (2,)  # any size: global pooling


def test_checkpoint_round_trip(tmp_path):
    net = _tiny()
    iqanet.save(tmp_path / "n.pt", net, {"note": 1})
    back, info = iqanet.load(tmp_path / "n.pt")
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(net.eval()(x), back(x)) and info == {"note": 1}


def test_input_pool_judges_the_block_averaged_image(tmp_path):
    torch.manual_seed(0)
    pooled = iqanet.IqaNet(iqanet.IqaNetConfig(width=4, input_pool=2)).eval()
    full = iqanet.IqaNet(iqanet.IqaNetConfig(width=4)).eval()
    full.load_state_dict(pooled.state_dict())  # pooling adds no weights
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(pooled(x), full(torch.nn.functional.avg_pool2d(x, 2)), atol=1e-6)
    # the pool is part of the architecture stored in the checkpoint
    iqanet.save(tmp_path / "n.pt", pooled, {})
    back, _ = iqanet.load(tmp_path / "n.pt")
    assert back.cfg.input_pool == 2 and torch.equal(back(x), pooled(x))


def test_a_checkpoint_without_input_pool_loads_at_full_resolution(tmp_path):
    net = _tiny()
    iqanet.save(tmp_path / "n.pt", net, {})
    ckpt = torch.load(tmp_path / "n.pt", weights_only=True)
    del ckpt["config"]["input_pool"]  # written before the field existed
    torch.save(ckpt, tmp_path / "n.pt")
    back, _ = iqanet.load(tmp_path / "n.pt")
    x = torch.rand(2, 3, 32, 32)
    assert back.cfg.input_pool == 1 and torch.equal(back(x), net.eval()(x))


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="dvc repro"):
        iqanet.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        iqanet.load(tmp_path / "junk.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an iqpfr.iqanet/1 checkpoint"):
        iqanet.load(tmp_path / "other.pt")
    net = _tiny()
    iqanet.save(tmp_path / "n.pt", net, {})
    ckpt = torch.load(tmp_path / "n.pt", weights_only=True)
    ckpt["config"]["width"] = 8  # config no longer matches the weights
    torch.save(ckpt, tmp_path / "n.pt")
    with pytest.raises(RuntimeError, match="size mismatch"):
        iqanet.load(tmp_path / "n.pt")


def test_regression_learns_a_monotone_quality():
    """On images whose quality is the amount of added noise, training must rank them."""
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 3, 24, 24, generator=g) * 0.3 + 0.35
    base = torch.nn.functional.avg_pool2d(base, 3, 1, 1).expand(96, -1, -1, -1)
    q = torch.rand(96, generator=g)
    x = (base + (1 - q)[:, None, None, None] * 0.3 * torch.randn(base.shape, generator=g)).clamp(0, 1)
    net = _tiny()
    hist = iqanet.train_regression(net, x, q, epochs=12, batch_size=16, lr=3e-3, seed=0,
                                   evals={"train": (x, q.numpy())}, log=lambda *_: None)
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert hist[-1]["spearman_train"] > 0.8


def test_ranking_mode_orders_levels():
    rng = np.random.default_rng(0)
    imgs = np.clip(rng.random((12, 24, 24, 3)).astype(np.float32) * 0.2 + 0.4, 0, 1)
    levels = iqanet.graded_distortions(imgs[0], 4, 1, rng)
    assert len(levels) == 4 and np.array_equal(levels[0], imgs[0])
    net = _tiny()
    hist = iqanet.train_ranking(net, imgs, levels=4, epochs=6, batch_size=16, lr=3e-3, seed=0, log=lambda *_: None)
    assert hist[-1]["loss"] < hist[0]["loss"]
    agree = iqanet.ranking_agreement(net, imgs[:4], 4, seed=1)
    assert agree["noise"] > 0.5
