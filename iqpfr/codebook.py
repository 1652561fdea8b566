"""Stage I as pipeline stages (SPEC 1.2-1.3): train the dual-codebook VQGAN (notebook 02 or
`torchrun -m iqpfr.cli train stage1`), analyse it, and compute the latent targets of stage II.
Each function receives exactly the params sections its DVC stage lists."""
from __future__ import annotations

import time

import pandas as pd
import torch

from . import data, evaluate, precision
from .iqanet import spearman
from .config import DataConfig, Stage1Config, VqganParams
from .pipeline import _load_stack, write_metrics
from .task import FACE, Task
from .train import (Stage1Settings, Stage1Trainer, fingerprint, load_stage1_model, make_perceptual, resume_or_restart,
                    save_atomic, setup_distributed, write_log_csv)
from .quality import NormStats, make_metric
from .quantize import code_usage
from .vqgan import VQGANConfig

STAGE1 = FACE.stage1  # the face task's files; other tasks pass their Task
TARGETS = FACE.targets


def vqgan_config(data_cfg: DataConfig, vqgan: VqganParams) -> VQGANConfig:
    return VQGANConfig(resolution=data_cfg.resolution, **{k: tuple(v) if isinstance(v, list) else v
                                                         for k, v in vqgan.__dict__.items()})


def stage1_settings(stage1: Stage1Config, device: torch.device | str = "cpu") -> Stage1Settings:
    """The loop's settings from params.yaml's `stage1` section, with the precision resolved for `device`."""
    return Stage1Settings(steps=stage1.steps, batch_size=stage1.batch_size, lr=stage1.lr, betas=tuple(stage1.betas),
                          lr_min_ratio=stage1.lr_min_ratio, codebook_lr_mult=stage1.codebook_lr_mult,
                          codebook_init=stage1.codebook_init, init_from=stage1.init_from, restart_every=stage1.restart_every,
                          precision=precision.resolve(stage1.precision, device), ema_decay=stage1.ema_decay,
                          perceptual_weight=stage1.perceptual_weight, gan_start=stage1.gan_start,
                          gan_weight=stage1.gan_weight, hflip=stage1.hflip, seed=stage1.seed,
                          log_every=stage1.log_every, checkpoint_every=stage1.checkpoint_every)


def stage1_gates(stage1: Stage1Config, n: int, task: Task = FACE) -> torch.Tensor:
    """The per-GT gate m of the HQ+ codebook, from the scoring stage (or all/none)."""
    if stage1.gate in ("all", "none"):
        return torch.full((n,), 1.0 if stage1.gate == "all" else 0.0)
    scores = pd.read_csv(task.scores / "train.csv")
    if len(scores) != n:
        raise ValueError(f"{task.scores / 'train.csv'} scores {len(scores)} GTs but the training set holds {n}: re-run scoring")
    return torch.tensor(scores["gate" if stage1.gate == "threshold" else "gate_strict"].to_numpy(), dtype=torch.float32)


def train_codebook(data_cfg: DataConfig, vqgan: VqganParams, stage1: Stage1Config, progress=print,
                   task: Task = FACE) -> dict:
    """Train (or resume, or reuse when complete) the stage-I model; torchrun-aware.

    An existing checkpoint with the same model config and settings is resumed; one with other
    settings is set aside (renamed *.stale.pt), never silently mixed in.
    """
    d = setup_distributed()
    cfg, settings = vqgan_config(data_cfg, vqgan), stage1_settings(stage1, d.device)
    images = data.ManifestDataset(task.world / "train")
    gates = stage1_gates(stage1, len(images), task)
    inputs = fingerprint(list(images.frame["sha256"]), gates)  # a finished run is reused only for the same data
    trainer = resume_or_restart(lambda: Stage1Trainer(cfg, settings, images, gates, make_perceptual(stage1.perceptual, d.device),
                                                      d, inputs), task.stage1, progress)
    t0 = time.time()
    start = trainer.step
    log = trainer.train(checkpoint=task.stage1, progress=lambda r: progress(
        f"step {r['step']:5d}  loss {r['loss']:.4f}  l1 {r['l1']:.4f}  perc {r['perceptual']:.4f}  "
        f"ppl C {r['perplexity_c']:.1f} H {r['perplexity_h']:.1f}  adv {r['adv_weight']:.3f}  {r['seconds']:.2f}s/step"))
    seconds = time.time() - t0
    if d.main:
        write_log_csv(log, task.metrics / "train_codebook_log.csv")
    return {"steps": trainer.step, "steps_this_run": trainer.step - start, "seconds_this_run": seconds,
            "precision": settings.precision,
            "seconds_per_step": seconds / max(trainer.step - start, 1), "world_size": d.world,
            "parameters": {"encoder": sum(p.numel() for p in trainer.model.encoder.parameters()),
                           "generator": sum(p.numel() for p in trainer.model.generator.parameters()),
                           "discriminator": sum(p.numel() for p in trainer.disc.parameters())}}


def latent_targets(data_cfg: DataConfig, vqgan: VqganParams, task: Task = FACE) -> dict:
    """Stage `latent_targets` (SPEC 1.3): code indices of every training GT and its flip under the
    frozen stage-I model, for both codebooks. Refuses an untrained or mismatched checkpoint."""
    t0 = time.time()
    model, info = load_stage1_model(task.stage1, expect=vqgan_config(data_cfg, vqgan))
    ds = data.ManifestDataset(task.world / "train")
    loader = torch.utils.data.DataLoader(ds, batch_size=64, shuffle=False)
    idx_c, idx_h = [], []
    with torch.no_grad():
        for x, _ in loader:
            x = x * 2 - 1
            z = model.encode(torch.cat([x, x.flip(3)]))  # (2b, D, r, r)
            c, h = model.quant_c.nearest(z), model.quant_h.nearest(z)
            b = len(x)
            idx_c.append(torch.stack([c[:b], c[b:]], 1))  # (b, 2, r, r): original, flipped
            idx_h.append(torch.stack([h[:b], h[b:]], 1))
    idx_c, idx_h = torch.cat(idx_c), torch.cat(idx_h)
    task.targets.parent.mkdir(parents=True, exist_ok=True)
    ckpt_sha = data.sha256_file(task.stage1)
    save_atomic({"format": "iqpfr.targets/1", "idx_c": idx_c.to(torch.int16), "idx_h": idx_h.to(torch.int16),
                 "sha256": list(ds.frame["sha256"]), "files": list(ds.frame["file"]),
                 "stage1_sha256": ckpt_sha, "stage1_step": info["step"]}, task.targets)
    out = {"count": len(ds), "latent": list(idx_c.shape[2:]), "stage1_step": info["step"],
           "perplexity_c": code_usage(idx_c.long(), model.cfg.codebook_size)["perplexity"],
           "perplexity_h": code_usage(idx_h.long(), model.cfg.codebook_size)["perplexity"],
           "seconds": time.time() - t0}
    write_metrics("latent_targets", out, task)
    return out


@torch.no_grad()
def reconstruct(model, x01: torch.Tensor, hq_weight: float | None = None) -> torch.Tensor:
    """Stage-I reconstruction of images (B, 3, R, R) in [0,1] with the gate open -> [0,1]."""
    out, _ = model(x01 * 2 - 1, None, hq_weight)
    return ((out + 1) / 2).clamp(0, 1)


@torch.no_grad()
def analysis(data_cfg: DataConfig, vqgan: VqganParams, usage_images: int = 512, task: Task = FACE) -> dict:
    """Held-out reconstructions (lambda = 0 and the trained lambda) with PSNR/SSIM, code usage of
    both codebooks on training GTs (H counted on gated GTs only) and a 2-D PCA of the codebooks.
    Where the GTs have clean images: does the common codebook keep each GT's own true quality
    (the task's definition)?"""
    model, info = load_stage1_model(task.stage1, expect=vqgan_config(data_cfg, vqgan))
    x, frame = _load_stack(task.world / "holdout")
    oracle = _load_stack(task.world / "holdout", "oracle_file")[0] if "oracle_file" in frame else None
    lam = model.cfg.hq_weight
    recs = {"common only (lambda=0)": reconstruct(model, x, 0.0), f"common + HQ+ (lambda={lam})": reconstruct(model, x, lam)}
    rows = []
    for i in range(len(x)):
        gt = x[i].permute(1, 2, 0).numpy()
        row = {"index": i}
        for key, r in zip(("lambda0", "lambda"), recs.values()):
            out = r[i].permute(1, 2, 0).numpy()
            row[f"psnr_{key}"], row[f"ssim_{key}"] = evaluate.psnr(out, gt), evaluate.ssim(out, gt)
            if oracle is not None:  # the pristine render behind the GT, never seen in training
                ref = oracle[i].permute(1, 2, 0).numpy()
                row[f"psnr_oracle_{key}"], row[f"ssim_oracle_{key}"] = evaluate.psnr(out, ref), evaluate.ssim(out, ref)
        if oracle is not None:
            ref = oracle[i].permute(1, 2, 0).numpy()
            row["psnr_oracle_gt"], row["ssim_oracle_gt"] = evaluate.psnr(gt, ref), evaluate.ssim(gt, ref)
        rows.append(row)
    train_x, _ = _load_stack(task.world / "train")
    train_x = train_x[:usage_images]
    gates = torch.tensor(pd.read_csv(task.scores / "train.csv")["gate"].to_numpy()[:usage_images]) > 0
    z = model.encode(train_x * 2 - 1)
    idx_c, idx_h = model.quant_c.nearest(z), model.quant_h.nearest(z[gates])
    k = model.cfg.codebook_size
    counts = {"C (common)": torch.bincount(idx_c.flatten(), minlength=k).numpy(),
              "H (HQ+)": torch.bincount(idx_h.flatten(), minlength=k).numpy()}
    books = torch.cat([model.quant_c.embedding.weight, model.quant_h.embedding.weight])
    u, s, v = torch.pca_lowrank(books, q=2)
    proj = ((books - books.mean(0)) @ v[:, :2]).numpy()
    per = pd.DataFrame(rows)
    keeps = {}
    if oracle is not None:  # does the common codebook keep each GT's own quality? (true quality vs the oracle)
        keeps["spearman_true_quality_gt_vs_recon"] = spearman(task.true_quality(x, oracle),
                                                              task.true_quality(recs["common only (lambda=0)"], oracle))
    return {"step": info["step"], "holdout": x, "reconstructions": recs, "per_image": per, "keeps_quality": keeps,
            "counts": counts, "projection": {"C (common)": proj[:k], "H (HQ+)": proj[k:]},
            "usage": {"perplexity_c": code_usage(idx_c, k)["perplexity"], "perplexity_h": code_usage(idx_h, k)["perplexity"],
                      "used_c": float((counts["C (common)"] > 0).mean()), "used_h": float((counts["H (HQ+)"] > 0).mean())}}


@torch.no_grad()
def reconstruction_quality_by_bin(data_cfg: DataConfig, vqgan: VqganParams, count: int = 600,
                                  task: Task = FACE) -> pd.DataFrame:
    """Mean prior score S of training GTs and of their stage-I reconstructions, per GT score bin.

    Tells whether the codebook keeps quality differences (what stage II's conditioning learns from).
    The returned frame's attrs["spearman"] is the rank correlation between the two over `count` GTs.
    """
    model, _ = load_stage1_model(task.stage1, expect=vqgan_config(data_cfg, vqgan))
    x, _ = _load_stack(task.world / "train")
    x = x[:count]
    scores = pd.read_csv(task.scores / "train.csv").iloc[:count]
    stats = NormStats.load(task.scores / "norm_stats.json")
    metrics = {n: make_metric(n, "cpu", task.prior) for n in stats.ensemble}
    rec = torch.cat([reconstruct(model, x[i:i + 100]) for i in range(0, len(x), 100)])
    s_rec = stats.ensemble_score({n: torch.cat([m(rec[i:i + 100]) for i in range(0, len(rec), 100)]).numpy()
                                  for n, m in metrics.items()})
    df = pd.DataFrame({"bin": scores["bin"], "GT score": scores["S"], "reconstruction score": s_rec})
    out = df.groupby("bin")[["GT score", "reconstruction score"]].mean()
    out["GTs"] = df.groupby("bin").size()
    out.attrs["spearman"] = spearman(df["GT score"], df["reconstruction score"])
    return out
