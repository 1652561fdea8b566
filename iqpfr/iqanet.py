"""The learned offline NR-IQA: a compact differentiable quality network trained in the pipeline.

Why it exists: pretrained NR-IQA weights cannot be downloaded here, and the training-free
metrics that run offline (NIQE, PIQE) do not rank degradations at 64-256 px (SPEC 2). So the
default profile trains its own prior on images with known quality that are never training GTs:

- "regression" (synthetic world): a separately seeded labelled split whose true quality is the
  SSIM to the pristine oracle. Loss: MSE between the sigmoid output and the label plus a
  pairwise ranking hinge inside each batch (Spearman is what the prior is judged on).
- "ranking" (an unlabelled folder of real faces; RankIQA, Liu et al. 2017): each image is
  distorted at `levels` graded strengths of one type (blur, noise, JPEG); a margin ranking loss
  orders neighbouring levels, and a light MSE to 1 - k/(levels-1) anchors the scale.

Output: q = sigmoid(f(x)) in [0, 1], higher is better; on the synthetic world it is calibrated to
the SSIM scale of true quality by the regression target.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import atomic, safeload
from .degrade import jpeg

FORMAT = "iqpfr.iqanet/1"


@dataclass(frozen=True)
class IqaNetConfig:
    """Architecture of the quality network (stored inside each checkpoint)."""

    width: int = 16  # channels of stage 1; stages double up to 8x
    stages: int = 4
    mode: str = "regression"  # "regression" or "ranking": how it was trained
    input_pool: int = 1  # the image is averaged over input_pool x input_pool blocks first (1: full resolution)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        self.norm = nn.GroupNorm(min(8, cout // 2), cout)
        self.skip = nn.Conv2d(cin, cout, 1, stride) if (cin != cout or stride != 1) else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.conv1(x))
        return F.gelu(self.norm(self.conv2(h)) + self.skip(x))


class IqaNet(nn.Module):
    """Compact NR-IQA CNN: (B, 3, H, W) in [0,1] -> (B,) logits; `score` gives sigmoid in [0,1].

    Stage 1 runs at full resolution (noise and JPEG blocking live in the finest scale); each
    later stage halves the size. Features are pooled by mean and standard deviation over space
    (texture statistics), then a two-layer head maps them to one logit. With `input_pool` p > 1
    the network first averages p x p pixel blocks (a judge of colour, whose flaws are smooth:
    measured in benchmarks/colour_prior.py), so stage 1 runs at H / p.
    """

    def __init__(self, cfg: IqaNetConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.width * min(2 ** i, 8) for i in range(cfg.stages)]
        self.stem = nn.Conv2d(3, chans[0], 3, 1, 1)
        blocks, cin = [], chans[0]
        for i, c in enumerate(chans):
            blocks.append(_Block(cin, c, 1 if i == 0 else 2))
            cin = c
        self.blocks = nn.ModuleList(blocks)
        feat = 2 * sum(chans)
        self.head = nn.Sequential(nn.Linear(feat, 64), nn.GELU(), nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.input_pool > 1:
            x = F.avg_pool2d(x, self.cfg.input_pool)  # (B, 3, H / p, W / p)
        h = self.stem(x * 2 - 1)  # (B, C0, H', W'), H' = H / p
        pooled = []
        for blk in self.blocks:
            h = blk(h)  # (B, Ci, H' / 2^i, W' / 2^i)
            pooled += [h.mean((2, 3)), h.flatten(2).std(2)]
        return self.head(torch.cat(pooled, 1)).squeeze(1)  # (B,)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """Quality in [0, 1], higher is better, differentiable. x: (B, 3, H, W) in [0, 1]."""
        return torch.sigmoid(self(x))


# ----------------------------------------------------------------------------------------------
# checkpoints


def save(path: str | Path, net: IqaNet, info: dict) -> str:
    """Write a self-describing checkpoint atomically; return its sha256."""
    return atomic.save_torch({"format": FORMAT, "config": asdict(net.cfg), "state_dict": net.state_dict(),
                              "info": info}, path)


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[IqaNet, dict]:
    """Load a checkpoint written by `save`; strict, with a clear error for a wrong file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"learned NR-IQA checkpoint {path} not found: run `dvc repro train_prior`")
    ckpt = safeload.load(path, "checkpoint", map_location=device)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} checkpoint (format={ckpt.get('format') if isinstance(ckpt, dict) else None})")
    net = IqaNet(IqaNetConfig(**ckpt["config"])).to(device)
    net.load_state_dict(ckpt["state_dict"], strict=True)
    return net.eval(), ckpt["info"]


# ----------------------------------------------------------------------------------------------
# training


def _pair_rank_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.02) -> torch.Tensor:
    """Hinge on every ordered pair in the batch whose labels differ by more than the margin."""
    dp = pred[:, None] - pred[None, :]
    dt = target[:, None] - target[None, :]
    mask = (dt > margin).float()
    return (F.relu(margin - dp) * mask).sum() / mask.sum().clamp(min=1)


def graded_distortions(img: np.ndarray, levels: int, kind: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`levels` copies of (H, W, 3) img in [0,1] at increasing strength of distortion `kind`
    (0 blur, 1 noise, 2 JPEG); level 0 is the image itself."""
    h = img.shape[0]
    out = [img]
    for k in range(1, levels):
        t = k / (levels - 1)
        if kind == 0:
            out.append(cv2.GaussianBlur(img, (0, 0), 0.2 + t * 2.5 * h / 64))
        elif kind == 1:
            out.append(np.clip(img + rng.standard_normal(img.shape).astype(np.float32) * t * 0.2, 0, 1))
        else:
            out.append(jpeg(img, int(round(90 - t * 85))))
    return out


@torch.no_grad()
def predict(net: IqaNet, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Scores of (N, 3, H, W) images in [0,1] -> (N,) numpy. Batches of 64 (64 px, 2 cores): 2.0 s for
    1400 images against 4.1 s in batches of 256, whose activations overflow the caches; same scores."""
    net.eval()
    return torch.cat([net.score(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]).numpy()


def spearman(a, b) -> float:
    from scipy.stats import spearmanr  # here, not at the top: scipy.stats costs 0.8 s of every process's start

    return float(spearmanr(a, b).statistic)


def train_regression(net: IqaNet, x: torch.Tensor, q: torch.Tensor, epochs: int, batch_size: int,
                     lr: float, seed: int, evals: dict[str, tuple[torch.Tensor, np.ndarray]],
                     log=print) -> list[dict]:
    """Fit the network to labelled images. x: (N, 3, H, W) in [0,1]; q: (N,) true quality.

    `evals` maps a split name to (images, labels); Spearman on each is logged per epoch.
    Returns the per-epoch log rows.
    """
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    steps = epochs * math.ceil(len(x) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    history = []
    for epoch in range(epochs):
        net.train()
        t0, total, n = time.time(), 0.0, 0
        for idx in torch.randperm(len(x), generator=g).split(batch_size):
            xb, qb = x[idx], q[idx]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            pred = net.score(xb)
            loss = F.mse_loss(pred, qb) + 0.5 * _pair_rank_loss(pred, qb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(idx), n + len(idx)
        row = {"epoch": epoch + 1, "loss": total / n, "seconds": time.time() - t0}
        for name, (xe, qe) in evals.items():
            row[f"spearman_{name}"] = spearman(predict(net, xe), qe)
        history.append(row)
        log(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
    return history


def train_ranking(net: IqaNet, images: np.ndarray, levels: int, epochs: int, batch_size: int, lr: float,
                  seed: int, log=print) -> list[dict]:
    """RankIQA-style training on unlabelled images (N, H, W, 3) in [0,1]; see module docstring."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    per_step = max(1, batch_size // levels)
    steps = epochs * math.ceil(len(images) / per_step)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    target = torch.linspace(1, 0, levels)
    history = []
    for epoch in range(epochs):
        net.train()
        t0, total, n = time.time(), 0.0, 0
        order = rng.permutation(len(images))
        for s in range(0, len(order), per_step):
            ids = order[s:s + per_step]
            stack = [graded_distortions(images[i], levels, int(rng.integers(3)), rng) for i in ids]
            xb = torch.from_numpy(np.stack([v for grp in stack for v in grp])).permute(0, 3, 1, 2)
            pred = net.score(xb).view(len(ids), levels)  # (b, levels)
            rank = F.relu(0.05 - (pred[:, :-1] - pred[:, 1:])).mean()
            loss = rank + 0.2 * F.mse_loss(pred, target.expand_as(pred))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item() * len(ids), n + len(ids)
        history.append({"epoch": epoch + 1, "loss": total / n, "seconds": time.time() - t0})
        log(f"epoch={epoch + 1} loss={total / n:.4f}")
    return history


def ranking_agreement(net: IqaNet, images: np.ndarray, levels: int, seed: int) -> dict[str, float]:
    """Mean Spearman between score and distortion level (negated: 1 = perfect order) per type,
    over held-out images (N, H, W, 3)."""
    rng = np.random.default_rng(seed)
    out = {}
    for kind, name in enumerate(("blur", "noise", "jpeg")):
        rhos = []
        for img in images:
            stack = np.stack(graded_distortions(img, levels, kind, rng))
            s = predict(net, torch.from_numpy(stack).permute(0, 3, 1, 2))
            rhos.append(-spearman(s, np.arange(levels)))
        out[name] = float(np.nanmean(rhos))
    return out
