"""Stage-I training machinery: overfit, determinism, exact resume, strict loading, DDP."""
from __future__ import annotations

import os
import socket
from dataclasses import replace

import pytest
import torch
import torch.multiprocessing as mp

from iqpfr import train
from iqpfr.train import Dist, Stage1Settings, Stage1Trainer
from iqpfr.vqgan import VQGANConfig

TINY = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                   codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)


def _images(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(n, 3, 32, 32, generator=g), 3, 1, 1)
    return torch.utils.data.TensorDataset(x, torch.arange(n))


def _trainer(settings, n=8, cfg=TINY, d=None):
    gates = torch.tensor([1.0, 0.0] * (n // 2))
    return Stage1Trainer(cfg, settings, _images(n), gates, None, d)


BASE = Stage1Settings(steps=6, batch_size=4, lr=1e-3, gan_start=3, log_every=1, checkpoint_every=100)


def _params(t):
    return torch.cat([p.detach().flatten() for p in t.model.parameters()])


def test_loss_at_init_is_finite_and_reconstruction_poor():
    t = _trainer(BASE)
    row = t.train_step()
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())
    assert row["l1"] > 0.05  # an untrained model does not reconstruct


def test_overfit_one_batch():
    """The stage-I loss on one fixed batch falls at least 5x (issue 3)."""
    torch.manual_seed(0)
    settings = Stage1Settings(steps=250, batch_size=4, lr=2e-3, gan_start=10**9, hflip=False, log_every=1,
                              lr_min_ratio=1.0)
    t = Stage1Trainer(TINY, settings, _images(4), torch.ones(4), None)
    log = t.train()
    first, last = log[0]["loss"], min(r["loss"] for r in log[-10:])
    assert last < first / 5, (first, last)


def test_determinism():
    a, b = _trainer(BASE), _trainer(BASE)
    a.train(until=4)
    b.train(until=4)
    assert torch.equal(_params(a), _params(b))


def test_exact_resume(tmp_path):
    """N steps, checkpoint, resume for M steps == N + M steps uninterrupted (GAN switches on in between)."""
    full = _trainer(BASE)
    full.train()
    part = _trainer(BASE)
    part.train(until=2, checkpoint=tmp_path / "s1.pt")
    resumed = _trainer(BASE)
    resumed.resume(tmp_path / "s1.pt")
    assert resumed.step == 2
    resumed.train()
    assert torch.equal(_params(full), _params(resumed))
    assert torch.equal(full.ema.module.conv_out.weight, resumed.ema.module.conv_out.weight)
    assert [r["loss"] for r in full.log] == [r["loss"] for r in resumed.log]


def test_strict_loading(tmp_path):
    t = _trainer(BASE)
    t.train(until=1, checkpoint=tmp_path / "s1.pt")
    other = _trainer(BASE, cfg=replace(TINY, codebook_size=16))
    with pytest.raises(ValueError, match="config differs"):
        other.resume(tmp_path / "s1.pt")
    with pytest.raises(ValueError, match="different config"):
        train.load_stage1_model(tmp_path / "s1.pt", expect=replace(TINY, emb_dim=8))
    model, info = train.load_stage1_model(tmp_path / "s1.pt", expect=TINY)
    assert info["step"] == 1 and not any(p.requires_grad for p in model.parameters())
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable checkpoint"):
        train.load_stage1_model(tmp_path / "bad.pt")
    untrained = _trainer(BASE)
    untrained.save(tmp_path / "zero.pt")
    with pytest.raises(ValueError, match="untrained"):
        train.load_stage1_model(tmp_path / "zero.pt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_and_record(t: Stage1Trainer) -> dict:
    """Step 1's gradients (after DDP's averaging) and the loss of every step."""
    rows = [t.train_step()]
    grads = {n: p.grad.clone() for n, p in t.model.named_parameters() if p.grad is not None}
    rows += [t.train_step() for _ in range(t.s.steps - 1)]
    return {"grads": grads, "loss": [r["loss"] for r in rows], "l1": [r["l1"] for r in rows]}


def _ddp_worker(rank, world, port, settings, out):
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    d = train.setup_distributed()
    rec = _run_and_record(_trainer(settings, d=d))
    losses = [torch.zeros(len(rec["loss"])) for _ in range(world)]
    torch.distributed.all_gather(losses, torch.tensor(rec["loss"]))
    if rank == 0:
        rec["loss"] = torch.stack(losses).mean(0).tolist()  # mean of local means = global mean
        torch.save(rec, out)
    torch.distributed.destroy_process_group()


def test_ddp_matches_single_process(tmp_path):
    """2 gloo processes with batch 2 each == 1 process with batch 4: the same averaged gradients
    and the same loss curve. Compared on gradients and losses rather than raw weights: Adam turns
    the float noise on parameters whose true gradient is 0 (conv biases before GroupNorm) into
    full-size steps of either sign. The GAN is off here, because the discriminator's BatchNorm
    sees only the local batch (SyncBatchNorm is used on CUDA)."""
    settings = replace(BASE, steps=3, gan_start=10**9)
    mp.spawn(_ddp_worker, args=(2, _free_port(), settings, str(tmp_path / "ddp.pt")), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    single = _run_and_record(_trainer(settings, d=Dist()))
    assert ddp["grads"].keys() == single["grads"].keys()
    for k, g in single["grads"].items():
        torch.testing.assert_close(ddp["grads"][k], g, rtol=1e-3, atol=1e-6, msg=k)
    torch.testing.assert_close(torch.tensor(ddp["loss"]), torch.tensor(single["loss"]), rtol=1e-4, atol=1e-6)


def test_resume_refuses_other_code(tmp_path, monkeypatch):
    t = _trainer(BASE)
    t.train(until=1, checkpoint=tmp_path / "s1.pt")
    monkeypatch.setattr(train, "code_hash", lambda: "0" * 16)
    with pytest.raises(ValueError, match="other model/training code"):
        _trainer(BASE).resume(tmp_path / "s1.pt")


def test_ssim_luma_is_pyiqas_ssim_in_value_and_gradient():
    """The perceptual term's fast SSIM equals pyiqa's reference "ssim" (float64, 2-D window)."""
    import pyiqa

    from iqpfr.losses import ssim_luma

    ref = pyiqa.create_metric("ssim", as_loss=True, device="cpu")
    g = torch.Generator().manual_seed(0)
    clean = torch.nn.functional.avg_pool2d(torch.rand(4, 3, 32, 32, generator=g), 3, 1, 1)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    for a, b in ((noisy, clean), (torch.rand(4, 3, 32, 32, generator=g), clean), (clean, clean)):
        assert ssim_luma(a, b).mean().item() == pytest.approx(ref(a, b).item(), abs=1e-6)
    assert ssim_luma(clean, clean).tolist() == pytest.approx([1.0] * 4)
    mine, theirs = noisy.clone().requires_grad_(), noisy.clone().requires_grad_()
    (1 - ssim_luma(mine, clean).mean()).backward()
    (1 - ref(theirs, clean)).backward()
    assert torch.allclose(mine.grad, theirs.grad.float(), rtol=1e-4, atol=1e-9)
    assert mine.grad.abs().max() > 0
    per_image = ssim_luma(torch.cat([clean[:1], noisy[:1]]), torch.cat([clean[:1], clean[:1]]))
    assert per_image[0] > per_image[1]  # noise lowers SSIM image by image
