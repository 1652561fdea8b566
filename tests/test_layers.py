"""Layer layouts that must match CodeFormer's VQGAN (so released weights map one to one), the
codebook care of stage I (initialisation from encoder outputs, dead-code restart) and the
precision rule."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from iqpfr import precision
from iqpfr.quantize import VectorQuantizer
from iqpfr.train import Stage1Settings, Stage1Trainer
from iqpfr.vqgan import AttnBlock, Downsample, Encoder, VQGANConfig

TINY = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                   codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)


def test_downsample_pads_bottom_right_only():
    torch.manual_seed(0)
    d = Downsample(4)
    x = torch.randn(2, 4, 8, 8)
    y = d(x)
    assert y.shape == (2, 4, 4, 4)
    # output (0, 0) sees input rows/cols 0..2 (no padding at the top/left) ...
    ref = (d.conv.weight * x[:, None, :, 0:3, 0:3]).sum((2, 3, 4)) + d.conv.bias
    torch.testing.assert_close(y[:, :, 0, 0], ref)
    # ... and the last output sees rows/cols 6, 7 and one zero row/col of padding
    padded = F.pad(x, (0, 1, 0, 1))[:, :, 6:9, 6:9]
    ref = (d.conv.weight * padded[:, None]).sum((2, 3, 4)) + d.conv.bias
    torch.testing.assert_close(y[:, :, 3, 3], ref)


def test_attention_is_softmax_qk_over_sqrt_c_with_separate_projections():
    torch.manual_seed(0)
    a = AttnBlock(32)
    assert {n for n, _ in a.named_children()} == {"norm", "q", "k", "v", "proj_out"}
    assert all(getattr(a, n).weight.shape == (32, 32, 1, 1) for n in ("q", "k", "v", "proj_out"))
    x = torch.randn(2, 32, 4, 4)
    h = a.norm(x)
    q, k, v = (getattr(a, n)(h).flatten(2) for n in ("q", "k", "v"))  # (B, C, HW)
    w = torch.softmax(torch.einsum("bci,bcj->bij", q, k) / 32 ** 0.5, dim=-1)  # (B, HW_q, HW_k)
    out = torch.einsum("bij,bcj->bci", w, v).view(2, 32, 4, 4)
    torch.testing.assert_close(a(x), x + a.proj_out(out), rtol=1e-5, atol=1e-5)


def test_groupnorm_is_32_groups_eps_1e6():
    enc = Encoder(VQGANConfig(resolution=32, nf=64, ch_mult=(1, 2), attn_resolutions=(16,), emb_dim=16))
    norms = [m for m in enc.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and all(m.num_groups == 32 and m.eps == 1e-6 for m in norms)


def test_init_from_draws_distinct_encoder_vectors():
    q = VectorQuantizer(8, 4)
    z = torch.randn(2, 4, 3, 3)
    q.init_from(z, torch.Generator().manual_seed(0))
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    dist = torch.cdist(q.embedding.weight, flat)
    assert (dist.min(1).values < 1e-6).all()  # every code is one of the vectors
    assert len({int(i) for i in dist.argmin(1)}) == 8  # and no vector is used twice


def test_restart_moves_only_dead_codes():
    q = VectorQuantizer(6, 4)
    before = q.embedding.weight.detach().clone()
    counts = torch.tensor([3, 0, 1, 0, 0, 9])
    z = torch.randn(1, 4, 2, 2) * 5
    dead = q.restart_dead(counts, z, torch.Generator().manual_seed(0))
    after = q.embedding.weight.detach()
    assert dead.tolist() == [False, True, False, True, True, False]
    torch.testing.assert_close(after[~dead], before[~dead])
    flat = z.permute(0, 2, 3, 1).reshape(-1, 4)
    assert (torch.cdist(after[dead], flat).min(1).values < 1e-5).all()


def test_quantisation_runs_in_fp32_under_bf16_autocast():
    q = VectorQuantizer(16, 4)
    z = torch.randn(2, 4, 3, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        zq, idx, _ = q(z)
    assert zq.dtype == torch.float32
    assert torch.equal(idx, q.nearest(z))


def _images(n=8):
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n))


def test_trainer_initialises_codes_from_encoder_and_restarts_dead_ones():
    s = Stage1Settings(steps=5, batch_size=4, lr=1e-3, gan_start=10**9, restart_every=2, log_every=1)
    t = Stage1Trainer(TINY, s, _images(), torch.ones(8))
    assert t.model.quant_c.embedding.weight.abs().max() <= 1 / TINY.codebook_size  # SPEC 1.2 init before training
    t.init_codebooks()
    x, _ = t.batch(0)
    with torch.no_grad():
        flat = t.model.encode(x).permute(0, 2, 3, 1).reshape(-1, TINY.emb_dim)
    for q in (t.model.quant_c, t.model.quant_h):  # every code is an encoder output of the first batch
        assert (torch.cdist(q.embedding.weight.detach(), flat, compute_mode="donot_use_mm_for_euclid_dist").min(1).values < 1e-5).all()
    # codes nobody chooses (half of each book moved far away) must be restarted
    t = Stage1Trainer(TINY, replace(s, codebook_init="uniform"), _images(), torch.ones(8))
    half = TINY.codebook_size // 2
    with torch.no_grad():
        for q in (t.model.quant_c, t.model.quant_h):
            q.embedding.weight[:half] += 1e3
    log = t.train(until=5)
    assert log[1]["restarted_c"] >= half and log[1]["restarted_h"] >= half
    assert log[-1]["restarted_c"] == 0  # never in the last step
    assert t.usage.sum() > 0


def test_resume_refuses_another_precision(tmp_path):
    s = Stage1Settings(steps=2, batch_size=4, lr=1e-3, gan_start=10**9, precision="fp32")
    t = Stage1Trainer(TINY, s, _images(), torch.ones(8))
    t.train(until=1, checkpoint=tmp_path / "c.pt")
    other = Stage1Trainer(TINY, replace(s, precision="bf16"), _images(), torch.ones(8))
    with pytest.raises(ValueError, match="precision"):
        other.resume(tmp_path / "c.pt")


def test_precision_rule_reads_flags_not_timings(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor : 0\nflags : fpu sse avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert precision.cpu_flags(info) >= {"avx512_bf16", "amx_bf16"}
    assert precision.resolve("auto", "cpu", precision.cpu_flags(info)) == "bf16"
    assert precision.resolve("auto", "cpu", {"avx512f", "avx512_bf16"}) == "fp32"  # measured slower without AMX
    assert precision.resolve("auto", "cpu", set()) == "fp32"
    assert precision.resolve("bf16", "cpu", set()) == "bf16"
    assert precision.resolve("fp32", "cpu", {"amx_bf16"}) == "fp32"
    from iqpfr.restore import INFERENCE_BF16_FLAGS  # inference: measured slower and out of tolerance without AMX

    assert precision.resolve("auto", "cpu", {"avx512f", "avx512_bf16"}, bf16_flags=INFERENCE_BF16_FLAGS) == "fp32"
    assert precision.resolve("auto", "cpu", {"amx_bf16"}, bf16_flags=INFERENCE_BF16_FLAGS) == "bf16"
    assert precision.cpu_flags(tmp_path / "missing") == set()
    with pytest.raises(ValueError, match="precision"):
        precision.resolve("fp16", "cpu")


def test_balanced_batches_draw_every_group_equally_and_reproducibly():
    from iqpfr.conditioned import balanced_batch_indices

    groups = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)  # a crowded bin, a small one and a single GT
    a = balanced_batch_indices(3, groups, 12, seed=0)
    assert a == balanced_batch_indices(3, groups, 12, seed=0) and a != balanced_batch_indices(4, groups, 12, seed=0)
    drawn = torch.cat([groups[balanced_batch_indices(t, groups, 30, seed=1)] for t in range(200)])
    share = torch.bincount(drawn, minlength=3).float() / len(drawn)
    assert torch.allclose(share, torch.full((3,), 1 / 3), atol=0.03)
    # processes split the global batch as they do for plain batches
    whole = balanced_batch_indices(5, groups, 8, seed=0)
    assert balanced_batch_indices(5, groups, 8, seed=0, rank=1, world=2) == whole[1::2]


def test_init_from_starts_every_weight_from_the_checkpoint(tmp_path):
    s = Stage1Settings(steps=3, batch_size=4, lr=1e-3, gan_start=10**9, log_every=1)
    a = Stage1Trainer(TINY, s, _images(), torch.ones(8))
    a.train(until=3)
    a.save(tmp_path / "a.pt")
    b = Stage1Trainer(replace(TINY, hq_weight=0.3), replace(s, init_from=str(tmp_path / "a.pt")), _images(), torch.ones(8))
    b.init_weights(b.s.init_from)
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0)
    with pytest.raises(ValueError, match="another architecture.*emb_dim"):
        Stage1Trainer(replace(TINY, emb_dim=8), s, _images(), torch.ones(8)).init_weights(tmp_path / "a.pt")


def test_no_activation_between_the_last_groupnorm_and_conv_out():
    """CodeFormer's encoder and generator end GroupNorm -> conv (no swish in between)."""
    torch.manual_seed(0)
    cfg = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), attn_resolutions=(16,), emb_dim=16)
    from iqpfr.vqgan import Generator

    enc, gen = Encoder(cfg), Generator(cfg)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), enc.conv_out(enc.norm_out(enc.blocks(enc.conv_in(x)))))
    z = torch.randn(1, 16, 16, 16)
    torch.testing.assert_close(gen(z), gen.conv_out(gen.norm_out(gen.blocks(gen.conv_in(z)))))


def test_adain_uses_the_unbiased_variance_plus_eps_under_the_root():
    from iqpfr.transformer import adain

    torch.manual_seed(0)
    c, s = torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5) * 3 + 1
    out = adain(c, s)
    flat = lambda t: t.flatten(2)  # noqa: E731
    sd = (flat(s).var(2, unbiased=True) + 1e-5).sqrt()
    cd = (flat(c).var(2, unbiased=True) + 1e-5).sqrt()
    ref = (flat(c) - flat(c).mean(2, keepdim=True)) / cd[..., None] * sd[..., None] + flat(s).mean(2, keepdim=True)
    torch.testing.assert_close(flat(out), ref)
