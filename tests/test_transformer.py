"""Stage-II invariants on tiny configs: loss at init, conditioning, frozen modules, gradient path,
overfit, checkpoint round trip."""
from __future__ import annotations

import math

import pytest
import torch

from iqpfr import conditioned
from iqpfr.degrade import PRESETS
from iqpfr.transformer import (NUM_BINS, CodeTransformer, QualityRestorer, TransformerConfig, code_losses, from_patches,
                               ordinal_coefficients, score_to_bin, to_patches)
from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

V = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)


def _cfg(cond="add", patch=1, n_layers=1):
    return TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=n_layers, n_heads=2, d_model=16,
                             d_ff=32, conditioning=cond, patch=patch)


def _restorer(cond="add", seed=0):
    torch.manual_seed(seed)
    return QualityRestorer(DualCodebookVQGAN(V), _cfg(cond))


def test_score_bins():
    assert score_to_bin(torch.tensor([0.0, 0.05, 0.55, 0.95, 1.0])).tolist() == [0, 0, 5, 9, 9]


@pytest.mark.parametrize("cond", ["add", "adaln", "none"])
def test_loss_at_init_close_to_ln_k(cond):
    torch.manual_seed(0)
    t = CodeTransformer(_cfg(cond))
    z = torch.randn(4, 16, 16, 16)
    bins = torch.tensor([0, 3, 6, 9])
    lc, lh = t(t.condition(z, bins), bins)
    assert lc.shape == lh.shape == (4, 256, 32)
    idx = torch.randint(0, 32, (4, 256))
    assert code_losses(lc, lh, idx, idx).item() == pytest.approx(math.log(32), rel=0.02)


@pytest.mark.parametrize("cond", ["add", "adaln"])
def test_conditioning_changes_the_logits(cond):
    torch.manual_seed(0)
    t = CodeTransformer(_cfg(cond))
    z = torch.randn(1, 16, 16, 16).expand(2, -1, -1, -1)
    bins = torch.tensor([1, 9])
    lc, _ = t(t.condition(z, bins), bins)
    assert torch.allclose(lc[0], lc[1])  # zero-initialised conditioning starts neutral
    for p in (t.score_map,) if cond == "add" else t.modulation.parameters():
        torch.nn.init.normal_(p, std=0.5)
    lc, _ = t(t.condition(z, bins), bins)
    assert not torch.allclose(lc[0], lc[1], atol=1e-4)
    with pytest.raises(ValueError, match="score-conditioned"):
        if cond == "add":
            t.condition(z, None)
        else:
            t(z, None)


def _trainer(model, steps=4, qw=0.0, mode="discrete", q=None, score_lr_mult=1.0):
    n = 8
    g = torch.Generator().manual_seed(0)
    images = torch.utils.data.TensorDataset(torch.rand(n, 3, 32, 32, generator=g), torch.arange(n))
    targets = {"idx_c": torch.randint(0, 32, (n, 2, 16, 16), generator=g),
               "idx_h": torch.randint(0, 32, (n, 2, 16, 16), generator=g)}
    s = conditioned.Stage2Settings(steps=steps, batch_size=4, lr=2e-3, quality_weight=qw, quality_mode=mode, log_every=1,
                                   score_lr_mult=score_lr_mult)
    return conditioned.Stage2Trainer(model, s, images, targets, torch.linspace(0, 1, n), conditioned.DegradedLQ(PRESETS["mild"]), q)


class _MeanBrightness(torch.nn.Module):
    """A stand-in differentiable prior: brighter is 'better' (any differentiable Q would do)."""

    def forward(self, x):
        return x.mean((1, 2, 3))


def test_score_trend_is_one_map_shared_by_the_bins_from_minus_to_plus():
    """Emb[k] = R[k] + c_k D with c from -1 (bin 0) to 1 (bin 9), 0 for "no score"; off by default."""
    c = ordinal_coefficients(torch.arange(NUM_BINS + 1))
    assert c[0] == -1 and c[NUM_BINS - 1] == 1 and c[NUM_BINS] == 0
    assert (c[1:NUM_BINS] > c[:NUM_BINS - 1]).all() and c[4] == -c[5]
    assert CodeTransformer(_cfg()).score_map_trend is None  # the paper's table unless asked
    cfg = TransformerConfig(latent_size=4, emb_dim=8, codebook_size=16, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            null_bin=True, score_trend=True)
    t = CodeTransformer(cfg)
    assert t.score_map_trend.shape == (8, 4, 4) and not t.score_map_trend.any()  # starts neutral, as the table
    torch.nn.init.normal_(t.score_map_trend)
    torch.nn.init.normal_(t.score_map)
    z, bins = torch.randn(3, 8, 4, 4), torch.tensor([0, NUM_BINS - 1, NUM_BINS])
    expect = z + t.score_map[bins] + torch.stack([-t.score_map_trend, t.score_map_trend, 0 * t.score_map_trend])
    assert torch.allclose(t.condition(z, bins), expect, atol=1e-6)  # (R + c D) is added as one map
    with pytest.raises(ValueError, match="conditioning add"):
        TransformerConfig(conditioning="adaln", score_trend=True)


def test_score_trend_learns_with_the_embedding_and_from_every_bin():
    torch.manual_seed(0)
    cfg = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            score_trend=True)
    m = QualityRestorer(DualCodebookVQGAN(V), cfg)
    t = _trainer(m, score_lr_mult=10.0)
    assert {id(p) for p in t.opt.param_groups[1]["params"]} == {id(m.transformer.score_map), id(m.transformer.score_map_trend)}
    x_l, idx_c, idx_h, bins = t.batch(0)
    loss, _ = t.losses(x_l, idx_c, idx_h, bins)
    loss.backward()
    assert m.transformer.score_map_trend.grad.abs().sum() > 0
    strength = conditioned.embedding_strength(m, x_l)  # bin 9 minus bin 0 includes the trend's 2 D
    torch.nn.init.normal_(m.transformer.score_map_trend, std=0.1)
    with torch.no_grad():
        m.transformer.score_map.zero_()
    moved = conditioned.embedding_strength(m, x_l)["embedding_rms_bin9_minus_bin0"]
    assert strength["embedding_rms_bin9_minus_bin0"] == 0
    assert moved == pytest.approx(float((2 * m.transformer.score_map_trend.detach()).pow(2).mean().sqrt()), rel=1e-5)


def test_score_embedding_has_its_own_learning_rate():
    m = _restorer()
    t = _trainer(m, score_lr_mult=10.0)
    groups = t.opt.param_groups
    assert [g["lr"] for g in groups] == [pytest.approx(2e-3), pytest.approx(2e-2)]
    assert len(groups[1]["params"]) == 1 and groups[1]["params"][0] is m.transformer.score_map
    n_trained = sum(p.numel() for p in m.trainable_parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == n_trained  # every trained tensor once


def test_frozen_modules_stay_bit_identical():
    m = _restorer()
    before = {k: v.clone() for k, v in m.stage1.state_dict().items()}
    t = _trainer(m, steps=2, qw=0.5, q=_MeanBrightness())
    t.train()
    assert all(torch.equal(before[k], v) for k, v in m.stage1.state_dict().items())
    assert not any(p.requires_grad for p in m.stage1.parameters())


def test_quality_gradient_reaches_encoder_and_embedding_only():
    m = _restorer()
    t = _trainer(m, qw=1.0, q=_MeanBrightness())
    x_l, idx_c, idx_h, bins = t.batch(0)
    z_l = m.latent(x_l, bins)
    lc, lh = m.transformer(z_l, bins)
    z_hat = m.codes(lc.argmax(-1), lh.argmax(-1)).detach()
    l_q = torch.relu(1 - _MeanBrightness()(m.decode(z_l + (z_hat - z_l).detach()))).mean()
    l_q.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.encoder.parameters())
    grad_map = m.transformer.score_map.grad
    assert grad_map is not None and grad_map[bins].abs().sum() > 0
    unused = sorted(set(range(10)) - set(bins.tolist()))
    assert grad_map[unused].abs().sum() == 0
    others = [p for n, p in m.transformer.named_parameters() if n != "score_map"]
    assert all(p.grad is None for p in others)  # argmax blocks the Transformer
    assert all(p.grad is None for p in m.stage1.parameters())


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patch_layout_round_trips_in_raster_order(patch):
    """to_patches puts each patch's tokens side by side; from_patches lays per-patch rows back out
    one row per token in the latent's raster order: the two are inverse layouts."""
    r, d = 8, 3
    z = torch.arange(2 * d * r * r, dtype=torch.float32).view(2, d, r, r)
    rows = to_patches(z, patch)  # (2, (r/p)^2, d p^2)
    assert rows.shape == (2, (r // patch) ** 2, d * patch ** 2)
    # a head that copies its input, channel by channel: one "logit" per latent channel and token
    per_token = rows.view(2, -1, d, patch * patch).transpose(2, 3).reshape(2, -1, patch * patch * d)
    assert torch.equal(from_patches(per_token, patch, r), z.flatten(2).transpose(1, 2))


def test_patch_logits_of_a_token_depend_on_its_own_patch_only():
    """Without attention layers nothing mixes positions: changing one latent token changes the
    logits of exactly the p x p tokens of its patch, wherever the layout puts them."""
    torch.manual_seed(0)
    t = CodeTransformer(_cfg("none", patch=2, n_layers=0))
    z = torch.randn(1, 16, 16, 16)
    lc, _ = t(z)
    z2 = z.clone()
    z2[0, :, 5, 6] += 1.0  # token (5, 6): patch (2, 3), whose tokens are rows 4-5, columns 6-7
    changed = (t(z2)[0] - lc).abs().amax(-1)[0].view(16, 16) > 0
    expect = torch.zeros(16, 16, dtype=torch.bool)
    expect[4:6, 6:8] = True
    assert torch.equal(changed, expect)


@pytest.mark.parametrize("cond", ["add", "adaln", "none"])
def test_patch_model_attends_over_fewer_positions_and_starts_near_ln_k(cond):
    torch.manual_seed(0)
    t = CodeTransformer(_cfg(cond, patch=2))
    assert t.cfg.positions == 64 and t.pos.shape == (1, 64, 16)
    z, bins = torch.randn(4, 16, 16, 16), torch.tensor([0, 3, 6, 9])
    lc, lh = t(t.condition(z, bins), bins)
    assert lc.shape == lh.shape == (4, 256, 32)
    idx = torch.randint(0, 32, (4, 256))
    assert code_losses(lc, lh, idx, idx).item() == pytest.approx(math.log(32), rel=0.02)


def test_patch_must_divide_the_latent():
    with pytest.raises(ValueError, match="patch 3 must be >= 1 and divide latent_size 16"):
        _cfg(patch=3)


@pytest.mark.parametrize("patch", [1, 2])
def test_overfit_one_batch(patch):
    torch.manual_seed(0)
    t = CodeTransformer(_cfg(patch=patch))
    opt = torch.optim.Adam(t.parameters(), lr=3e-3)
    z, bins = torch.randn(4, 16, 16, 16), torch.tensor([0, 3, 6, 9])
    idx = torch.randint(0, 32, (4, 256))
    first = None
    for _ in range(150):
        lc, lh = t(t.condition(z, bins), bins)
        loss = code_losses(lc, lh, idx, idx)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 5


def test_checkpoint_round_trip_and_exact_resume(tmp_path):
    full = _trainer(_restorer(), steps=4)
    full.train()
    part = _trainer(_restorer(), steps=4)
    part.train(until=2, checkpoint=tmp_path / "s2.pt")
    resumed = _trainer(_restorer(), steps=4)
    resumed.resume(tmp_path / "s2.pt")
    resumed.train()
    for a, b in zip(full.params, resumed.params):
        assert torch.equal(a, b)
    other = _trainer(_restorer(), steps=5)
    with pytest.raises(ValueError, match="other settings"):
        other.resume(tmp_path / "s2.pt")


def test_restore_is_batched_and_deterministic():
    m = _restorer().eval()
    x = torch.rand(3, 3, 32, 32)
    full = m.restore(x, 0.95)
    single = torch.cat([m.restore(x[i:i + 1], 0.95) for i in range(3)])
    assert full.shape == x.shape and 0 <= full.min() and full.max() <= 1
    torch.testing.assert_close(full, single, atol=1e-5, rtol=1e-5)


def _ddp_worker(rank, world, port, out):
    import os

    from iqpfr import train

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = train.setup_distributed()
    t = _trainer(_restorer(), steps=2)
    t.d = d
    t.train_step()
    if rank == 0:
        torch.save([p.grad.clone() for p in t.params], out)
    torch.distributed.destroy_process_group()


def test_ddp_gradients_match_single_process(tmp_path):
    """2 gloo processes with batch 2 each average to the gradient of 1 process with batch 4."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path / "g.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "g.pt")
    single = _trainer(_restorer(), steps=2)
    single.train_step()
    for a, b in zip(ddp, single.params):
        torch.testing.assert_close(a, b.grad, rtol=1e-3, atol=1e-6)


def _guided_restorer(seed=0):
    torch.manual_seed(seed)
    cfg = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            null_bin=True)
    m = QualityRestorer(DualCodebookVQGAN(V), cfg).eval()
    torch.nn.init.normal_(m.transformer.score_map, std=0.5)  # a trained-looking embedding: every bin differs
    return m


def test_guidance_interpolates_between_no_score_and_score():
    m = _guided_restorer()
    assert m.transformer.score_map.shape[0] == 11  # the ten bins and "no score"
    z, bins = torch.randn(2, 16, 16, 16), torch.tensor([0, 9])
    none = torch.full_like(bins, 10)
    with torch.no_grad():
        plain = m.transformer(m.transformer.condition(z, bins), bins)
        uncond = m.transformer(m.transformer.condition(z, none), none)
        for w in (0.0, 1.0, 3.0):
            lc, lh = m.guided_logits(z, bins, w)
            torch.testing.assert_close(lc, uncond[0] + w * (plain[0] - uncond[0]))
            torch.testing.assert_close(lh, uncond[1] + w * (plain[1] - uncond[1]))
        torch.testing.assert_close(m.guided_logits(z, bins, 1.0)[0], plain[0], rtol=0, atol=0)


def test_guidance_changes_outputs_and_model_default_is_used():
    m = _guided_restorer()
    x = torch.rand(2, 3, 32, 32)
    assert not torch.equal(m.restore(x, 0.05, guidance=4.0), m.restore(x, 0.05, guidance=1.0))
    m.guidance = 4.0
    assert torch.equal(m.restore(x, 0.05), m.restore(x, 0.05, guidance=4.0))


def test_guidance_without_a_no_score_bin_is_refused():
    m = _restorer()
    with pytest.raises(ValueError, match="score dropout"):
        m.restore(torch.rand(1, 3, 32, 32), 0.95, guidance=2.0)
    with pytest.raises(ValueError, match="null_bin needs a score-conditioned model"):
        TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                          conditioning="none", null_bin=True)


def test_score_dropout_mask_is_seeded_and_has_its_rate():
    a = conditioned.score_dropout_mask(7, 4000, 0.15, seed=3)
    assert torch.equal(a, conditioned.score_dropout_mask(7, 4000, 0.15, seed=3))
    assert not torch.equal(a, conditioned.score_dropout_mask(8, 4000, 0.15, seed=3))
    assert abs(a.float().mean().item() - 0.15) < 0.03
    # two processes' shares interleave into the global batch's decisions
    halves = [conditioned.score_dropout_mask(7, 4000, 0.15, 3, rank, 2) for rank in (0, 1)]
    assert torch.equal(torch.stack(halves, 1).flatten(), a)


@pytest.mark.parametrize("guidance, adain", [(1.0, True), (2.0, False), (2.0, True)])
def test_enhancement_sweep_equals_restore_at_each_score(guidance, adain):
    """The tasks' S sweep encodes once per batch and computes the 'no score' logits once; it must
    still give each S exactly what `restore` gives."""
    from iqpfr.enhancement import sweep

    m = _guided_restorer()
    m.guidance = guidance
    lq = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    scores = (0.05, 0.55, 0.95)
    out = sweep(m, lq, scores, adain, batch=2)
    for s in scores:
        assert torch.equal(out[s], torch.cat([m.restore(lq[i:i + 2], s, use_adain=adain) for i in range(0, 5, 2)]))
    assert not torch.equal(out[0.05], out[0.95])  # the score matters, so the check above can fail


def test_enhancement_sweep_equals_restore_in_channels_last():
    """The tasks' evaluation runs its models in NHWC (`restore.INFERENCE_MEMORY_FORMAT`)."""
    from iqpfr.enhancement import sweep
    from iqpfr.restore import INFERENCE_MEMORY_FORMAT

    m = _guided_restorer().to(memory_format=INFERENCE_MEMORY_FORMAT)
    m.guidance = 2.0
    lq = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)).contiguous(memory_format=INFERENCE_MEMORY_FORMAT)
    assert torch.equal(sweep(m, lq, [0.95], True)[0.95], m.restore(lq, 0.95))
