"""Stage-I model invariants on tiny configs (and the paper config's size)."""
from __future__ import annotations

import pytest
import torch

from iqpfr.quantize import VectorQuantizer, code_usage
from iqpfr.vqgan import DualCodebookVQGAN, PatchDiscriminator, VQGANConfig, count_parameters

TINY = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                   codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)


def test_quantizer_nearest_and_init():
    torch.manual_seed(0)
    q = VectorQuantizer(16, 4)
    assert q.embedding.weight.abs().max() <= 1 / 16
    z = torch.randn(2, 4, 3, 3)
    idx = q.nearest(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    brute = torch.cdist(flat, q.embedding.weight).argmin(1).view(2, 3, 3)
    assert torch.equal(idx, brute)
    assert torch.equal(q.lookup(idx), q.embedding.weight[idx].permute(0, 3, 1, 2))


def test_straight_through_and_loss_terms():
    torch.manual_seed(0)
    q = VectorQuantizer(8, 4, beta=0.25)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    zq, idx, terms = q(z)
    assert torch.allclose(zq, q.lookup(idx))  # forward value is the code
    (g,) = torch.autograd.grad(zq.sum(), z, retain_graph=True)
    assert torch.equal(g, torch.ones_like(z))  # identity gradient
    # codebook term moves codes only; commitment term moves the encoder output only
    terms["codebook"].sum().backward(retain_graph=True)
    assert z.grad is None and q.embedding.weight.grad.abs().sum() > 0
    q.embedding.weight.grad = None
    terms["commitment"].sum().backward()
    assert z.grad.abs().sum() > 0 and q.embedding.weight.grad is None
    ratio = terms["commitment"] / terms["codebook"]
    assert torch.allclose(ratio, torch.full_like(ratio, 0.25))  # beta weighs the commitment term


def test_code_usage():
    assert code_usage(torch.arange(8), 8) == {"perplexity": pytest.approx(8.0), "usage": 1.0}
    assert code_usage(torch.zeros(10, dtype=torch.long), 8) == {"perplexity": pytest.approx(1.0), "usage": 0.125}


@pytest.mark.parametrize("fusion", ["add", "attention"])
def test_shapes_and_api(fusion):
    torch.manual_seed(0)
    cfg = VQGANConfig(**{**TINY.__dict__, "fusion": fusion})
    m = DualCodebookVQGAN(cfg).eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    z = m.encode(x)
    assert z.shape == (3, 16, cfg.latent_size, cfg.latent_size)
    z_hat, info = m.quantize(z)
    assert info["idx_c"].shape == (3, cfg.latent_size, cfg.latent_size)
    out = m.decode(z_hat)
    assert out.shape == x.shape
    assert torch.allclose(m.decode_indices(info["idx_c"], info["idx_h"]), out, atol=1e-5)
    assert PatchDiscriminator(cfg.disc_nf, cfg.disc_layers)(x).shape[:2] == (3, 1)


def test_gate_controls_the_hq_codebook():
    torch.manual_seed(0)
    m = DualCodebookVQGAN(TINY)
    z = torch.randn(2, 16, 16, 16)
    z_hat, info = m.quantize(z, gate=torch.tensor([0.0, 1.0]))
    zc = m.quant_c.lookup(info["idx_c"])
    zh = m.quant_h.lookup(info["idx_h"])
    assert torch.allclose(z_hat[0], zc[0], atol=1e-6)  # gate 0: common codebook only
    assert torch.allclose(z_hat[1], zc[1] + 0.8 * zh[1], atol=1e-6)  # gate 1: + lambda z_h
    assert info["vq_h"]["codebook"][0] == 0 and info["vq_h"]["codebook"][1] > 0
    _, info = m.quantize(z, gate=torch.zeros(2))
    (info["vq_h"]["codebook"].sum() + info["vq_h"]["commitment"].sum()).backward()
    assert not m.quant_h.embedding.weight.grad.any()  # H learns nothing from gated-out GTs


def test_paper_config_sizes():
    cfg = VQGANConfig()
    m = DualCodebookVQGAN(cfg)
    assert cfg.latent_size == 16
    assert count_parameters(m.encoder) == pytest.approx(29.4e6, rel=0.02)  # SPEC 6: 29.4M
    assert count_parameters(m.generator) == pytest.approx(34.1e6, rel=0.02)  # SPEC 6: 34.1M
    assert m.quant_c.embedding.weight.shape == m.quant_h.embedding.weight.shape == (1024, 256)


@pytest.mark.slow
def test_paper_config_forward_512():
    torch.manual_seed(0)
    m = DualCodebookVQGAN(VQGANConfig()).eval()
    with torch.no_grad():
        out, info = m(torch.rand(1, 3, 512, 512) * 2 - 1)
    assert out.shape == (1, 3, 512, 512) and info["idx_c"].shape == (1, 16, 16)


def test_params_section_matches_model_config():
    """params.yaml's `vqgan` section holds exactly VQGANConfig's fields except the resolution."""
    from dataclasses import fields

    from iqpfr.config import VqganParams

    assert {f.name for f in fields(VqganParams)} == {f.name for f in fields(VQGANConfig)} - {"resolution"}
