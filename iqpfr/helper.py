"""A helper restorer whose outputs harden the learned prior (stage `iqa_helper`, face task).

Why: the prior must rank restored faces, and restored faces carry flaws that capture never makes:
a codebook's mosaic of plausible patches, features that do not match the face they replace. The
procedural "restorer" family of `degrade.capture` imitates some of them; this stage makes real ones
without a cycle. It trains a separately seeded VQ autoencoder with the restorer's architecture
(`vqgan` section) on the IQA training split only, the images of true quality at least
`helper.min_quality` (as stage I trains on the gated GTs), degrades every IQA training image
`helper.draws` times with the restoration degradation (`degrade` section) and reconstructs each
copy through the helper's codebook:

    y = G(q(E(x_lq)))          x_lq = degrade(x_iqa),   label = SSIM(luma y, luma oracle)

These are CodeFormer's "nearest-neighbour code lookup" restorations: a restorer without a
Transformer. Their labels come from the IQA split's pristine renders, so the prior never sees a
training GT, a test pair or anything the pipeline's restorers made.

Measured (`benchmarks/prior_on_outputs.py`): see the README and notebook 04.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import data
from .config import DataConfig, DegradeConfig, HelperConfig, VqganParams
from .degrade import degrade
from .world import true_quality

HELPER = Path("data/iqa_helper")


def helper_settings(helper: HelperConfig):
    """The helper's stage-I loop: L1 + VQ only (no perceptual or GAN term), raw weights."""
    from .train import Stage1Settings

    return Stage1Settings(steps=helper.steps, batch_size=helper.batch_size, lr=helper.lr, restart_every=50,
                          ema_decay=0.0, perceptual_weight=0.0, gan_start=10 ** 9, seed=helper.seed,
                          log_every=50, checkpoint_every=10 ** 9)


def train_helper(images: torch.Tensor, data_cfg: DataConfig, vqgan: VqganParams, helper: HelperConfig,
                 progress=print):
    """A VQ autoencoder trained on `images` (N, 3, R, R) in [0,1]; returns it frozen in eval mode."""
    from .codebook import vqgan_config
    from .train import Stage1Trainer

    cfg = vqgan_config(data_cfg, vqgan)
    trainer = Stage1Trainer(cfg, helper_settings(helper), torch.utils.data.TensorDataset(images, torch.arange(len(images))),
                            torch.ones(len(images)))
    trainer.train(progress=lambda r: progress(f"helper step {r['step']:5d}  l1 {r['l1']:.4f}"))
    return trainer.model.eval().requires_grad_(False), trainer.log


@torch.no_grad()
def reconstruct(model, lq: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """y = G(q(E(x))) for x (N, 3, R, R) in [0,1] -> (N, 3, R, R) in [0,1] on the 8-bit grid."""
    out = torch.cat([model(lq[i:i + batch] * 2 - 1)[0] for i in range(0, len(lq), batch)])
    return torch.round(((out + 1) / 2).clamp(0, 1) * 255) / 255


def degraded(images: torch.Tensor, degrade_cfg: DegradeConfig, seed: int) -> torch.Tensor:
    """Each image (N, 3, R, R) in [0,1] through the restoration degradation, generator (seed, i)."""
    from .pipeline import degrade_ranges

    ranges = degrade_ranges(degrade_cfg)
    out = [degrade(x.permute(1, 2, 0).numpy(), np.random.default_rng([seed, i]), ranges)[0]
           for i, x in enumerate(images)]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def build_helper_set(data_cfg: DataConfig, degrade_cfg: DegradeConfig, vqgan: VqganParams, helper: HelperConfig,
                     iqa_dir: Path = Path("data/iqa"), out_dir: Path = HELPER, progress=print) -> dict:
    """Stage `iqa_helper`: the helper's outputs on the IQA training split, labelled, in out_dir
    (`out/NNNNNN.png` + manifest.csv with `true_quality`). helper.steps = 0 writes an empty set."""
    from .pipeline import _fresh, _load_stack, write_metrics

    t0 = time.time()
    _fresh(out_dir)
    rows, result = [], {"steps": helper.steps}
    if helper.steps > 0:
        if data_cfg.source != "synthetic":
            raise ValueError("helper.steps > 0 needs data.source: synthetic (its labels are SSIM to the pristine "
                             "renders); set helper.steps: 0 for a folder source")
        x, frame = _load_stack(iqa_dir / "train")
        oracle, _ = _load_stack(iqa_dir / "train", "oracle_file")
        keep = torch.from_numpy(frame["true_quality"].to_numpy() >= helper.min_quality)
        if int(keep.sum()) < helper.batch_size:
            raise ValueError(f"only {int(keep.sum())} IQA training images reach helper.min_quality "
                             f"{helper.min_quality}: fewer than one batch ({helper.batch_size})")
        model, log = train_helper(x[keep], data_cfg, vqgan, helper, progress)
        copies = x.repeat(helper.draws, 1, 1, 1)  # copy k of image j is row k * N + j
        out = reconstruct(model, degraded(copies, degrade_cfg, helper.seed))
        for i, y in enumerate(out):
            j = i % len(x)
            y_np = y.permute(1, 2, 0).numpy()
            name = f"out/{i:06d}.png"
            rows.append({"file": name, "sha256": data.write_png(out_dir / name, y_np), "source": frame["file"][j],
                         "true_quality": round(true_quality(y_np, oracle[j].permute(1, 2, 0).numpy()), 5)})
        q = np.array([r["true_quality"] for r in rows])
        result.update({"trained_on": int(keep.sum()), "outputs": len(rows), "final_l1": log[-1]["l1"],
                       "true_quality_mean": float(q.mean()), "true_quality_p10_p90": np.percentile(q, [10, 90]).tolist()})
    data.write_csv(out_dir / "manifest.csv", rows, columns=["file", "sha256", "source", "true_quality"])
    result["seconds"] = time.time() - t0
    write_metrics("iqa_helper", result)
    return result


def helper_set(out_dir: Path = HELPER) -> tuple[torch.Tensor, np.ndarray] | None:
    """The helper's labelled outputs (N, 3, R, R) in [0,1] and (N,) true quality; None when empty."""
    from .pipeline import _load_stack

    frame = pd.read_csv(out_dir / "manifest.csv")
    if frame.empty:
        return None
    x, frame = _load_stack(out_dir)
    return x, frame["true_quality"].to_numpy()
