"""The experiments of the walkthrough (notebooks/00_walkthrough.ipynb), small enough for a laptop.

Each function runs one lesson at the sizes it is given and returns plain arrays for the
notebook's figures. Everything is seeded; nothing reads the pipeline's data or models.

1. `train_toy_vq`: vector quantisation with the straight-through estimator on 2-D points.
2. `train_face_vq`: a VQ autoencoder (the project's stage-I trainer, tiny) on synthetic faces.
3. `prior_lesson`: NR-IQA: a learned quality network trained on graded distortions.
4. `train_s_knob`: the score embedding z + Emb[bin(S)] (eq. 12) and what S changes (here: colour).
5. `quality_ascent`: maximising a quality judge through the codes vs through a free latent.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .colour import colourfulness
from .iqanet import IqaNet, IqaNetConfig, graded_distortions, predict, spearman, train_regression
from .quantize import VectorQuantizer
from .synthfaces import render_face
from .train import Stage1Settings, Stage1Trainer
from .vqgan import DualCodebookVQGAN, VQGANConfig
from .world import true_quality

DISTORTIONS = ("blur", "noise", "jpeg")  # graded_distortions' kinds 0, 1, 2


# -- 1. vector quantisation on points ------------------------------------------------------------

def toy_points(n: int, seed: int = 0, clusters: int = 6, centre: tuple[float, float] = (4.0, 4.0)) -> torch.Tensor:
    """(n, 2) points from a mixture of `clusters` Gaussians on a ring of radius 2.5 around `centre`
    (away from the origin, as real encoder outputs are)."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(clusters) * 2 * torch.pi / clusters
    centres = torch.tensor(centre) + 2.5 * torch.stack([angles.cos(), angles.sin()], 1)
    which = torch.randint(0, clusters, (n,), generator=g)
    return centres[which] + 0.35 * torch.randn(n, 2, generator=g)


def straight_through(z: torch.Tensor, zq: torch.Tensor) -> torch.Tensor:
    """z + sg(zq - z): the value of zq, the gradient of z."""
    return z + (zq - z).detach()


def train_toy_vq(points: torch.Tensor, n_codes: int = 8, steps: int = 300, init: str = "uniform",
                 lr: float = 0.05, seed: int = 0) -> dict:
    """Learn `n_codes` codes for 2-D latents z = the points themselves, with the codebook term
    ||sg(z) - z_q||^2 (each used code moves towards the mean of the latents it wins).
    `init`: "uniform" (+-1/K, SPEC 1.2) or "data" (codes drawn from the latents).
    Returns the codes over training (steps+1, K, 2), final assignments, the quantisation error per
    step and the number of codes used."""
    vq = VectorQuantizer(n_codes, 2)
    z = points[:, :, None, None]  # (N, 2, 1, 1): one latent vector per point
    if init == "data":
        vq.init_from(z, torch.Generator().manual_seed(seed))
    opt = torch.optim.Adam(vq.parameters(), lr=lr)
    codes, errors = [vq.embedding.weight.detach().clone()], []
    for _ in range(steps):
        _, _, terms = vq(z)
        loss = terms["codebook"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        codes.append(vq.embedding.weight.detach().clone())
        errors.append(loss.item())
    idx = vq.nearest(z).flatten()
    return {"latents": points.numpy(), "codes": torch.stack(codes).numpy(), "assignment": idx.numpy(),
            "quantisation_error": np.array(errors), "codes_used": int(len(idx.unique()))}


# -- 2. a VQ autoencoder on faces -----------------------------------------------------------------

def faces(n: int, resolution: int = 32, seed: int = 0) -> torch.Tensor:
    """(n, 3, R, R) synthetic faces in [0, 1] (iqpfr.synthfaces), faces seed, seed+1, ..."""
    return torch.stack([torch.from_numpy(render_face(seed + i, resolution).image).permute(2, 0, 1) for i in range(n)])


def tiny_vqgan(resolution: int = 32, codebook_size: int = 64) -> VQGANConfig:
    """A VQGAN small enough for seconds of training: f = 4 (an 8 x 8 grid of tokens at 32 px)."""
    return VQGANConfig(resolution=resolution, nf=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(),
                       emb_dim=32, codebook_size=codebook_size, disc_nf=8, disc_layers=2)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean PSNR (dB) of images (N, 3, H, W) in [0, 1]."""
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def train_face_vq(train: torch.Tensor, held_out: torch.Tensor, codebook_size: int = 64, steps: int = 150,
                  seed: int = 0, log_every: int = 25) -> dict:
    """Stage I of the project (its trainer, without GAN or perceptual terms) on a handful of faces.
    Returns the model, held-out reconstructions and the PSNR curve [(step, dB)]."""
    cfg = tiny_vqgan(train.shape[-1], codebook_size)
    s = Stage1Settings(steps=steps, batch_size=8, lr=2e-3, gan_start=10**9, restart_every=20, seed=seed,
                       log_every=log_every, checkpoint_every=10**9)
    t = Stage1Trainer(cfg, s, torch.utils.data.TensorDataset(train, torch.arange(len(train))), torch.ones(len(train)))
    curve = []
    for until in sorted({*range(log_every, steps + 1, log_every), steps}):
        t.train(until=until)
        curve.append((until, psnr(reconstruct(t.model, held_out), held_out)))
    model = t.model.eval()
    recon = reconstruct(model, held_out)
    with torch.no_grad():
        used = model.quant_c.nearest(model.encode(held_out * 2 - 1)).unique().numel()
    return {"model": model, "reconstructions": recon, "curve": curve, "psnr": psnr(recon, held_out),
            "codes_used_held_out": int(used)}


@torch.no_grad()
def reconstruct(model: DualCodebookVQGAN, x01: torch.Tensor) -> torch.Tensor:
    """Through the common codebook only (lambda = 0): (N, 3, R, R) in [0, 1] -> same shape."""
    was = model.training
    model.eval()
    out, _ = model(x01 * 2 - 1, hq_weight=0.0)
    model.train(was)
    return ((out + 1) / 2).clamp(0, 1)


# -- 3. NR-IQA: a learned prior ------------------------------------------------------------------

def graded(images: torch.Tensor, levels: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray, np.ndarray, np.ndarray]:
    """Every image at `levels` strengths of each distortion. Returns (images (M, 3, R, R), true
    quality (M,) = luma SSIM to the clean image, kind (M,) in 0..2, level (M,))."""
    rng = np.random.default_rng(seed)
    out, q, kinds, lv = [], [], [], []
    for img in images.permute(0, 2, 3, 1).numpy():
        for kind in range(3):
            for level, d in enumerate(graded_distortions(img, levels, kind, rng)):
                out.append(d)
                q.append(true_quality(d, img))
                kinds.append(kind)
                lv.append(level)
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().contiguous()
    return x, np.array(q), np.array(kinds), np.array(lv)


def prior_lesson(train: torch.Tensor, held_out: torch.Tensor, levels: int = 6, epochs: int = 6, seed: int = 0) -> dict:
    """Train a small IqaNet to predict true quality from the image alone (no reference), then
    measure how it ranks held-out faces' degradations. Returns the net, per-image predictions
    and Spearman correlations (overall and per distortion)."""
    x, q, _, _ = graded(train, levels, seed)
    xh, qh, kh, lh = graded(held_out, levels, seed + 1)
    torch.manual_seed(seed)
    net = IqaNet(IqaNetConfig(width=8, stages=3))
    history = train_regression(net, x, torch.from_numpy(q).float(), epochs, 32, 3e-3, seed,
                               {"held_out": (xh, qh)}, log=lambda *_: None)
    pred = predict(net, xh)
    per_kind = {DISTORTIONS[k]: spearman(pred[kh == k], qh[kh == k]) for k in range(3)}
    return {"net": net.eval(), "pred": pred, "true": qh, "kind": kh, "level": lh, "history": history,
            "spearman": spearman(pred, qh), "spearman_by_kind": per_kind}


# -- 4. the score embedding ----------------------------------------------------------------------

class ToyConditioned(nn.Module):
    """Encoder -> z + Emb[bin] (eq. 12, one latent-shaped map per bin, zero at start) -> decoder.
    The same conditioning as the restorer's `add` mode, on a continuous autoencoder so that the
    effect of S is visible after seconds of training. x (B, 3, R, R) in [0, 1], bins (B,) long."""

    def __init__(self, resolution: int = 32, width: int = 32, bins: int = 10):
        super().__init__()
        r = resolution // 4
        self.enc = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.GELU(), nn.Conv2d(width, width, 3, 2, 1))
        self.emb = nn.Parameter(torch.zeros(bins, width, r, r))
        self.dec = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(width, width, 3, 1, 1), nn.GELU(),
                                 nn.Upsample(scale_factor=2), nn.Conv2d(width, 3, 3, 1, 1))

    def forward(self, x: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
        z = self.enc(x * 2 - 1)
        if bins is not None:
            z = z + self.emb[bins]
        return torch.sigmoid(self.dec(z))


def blur(x: torch.Tensor, sigmas) -> torch.Tensor:
    """Gaussian blur of each image (N, 3, R, R) with its own sigma in pixels (0 = none)."""
    out = []
    for img, s in zip(x.permute(0, 2, 3, 1).numpy(), np.broadcast_to(np.asarray(sigmas, float), (len(x),))):
        out.append(cv2.GaussianBlur(img, (0, 0), float(s)) if s > 0 else img)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def saturate(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Mix each image (N, 3, R, R) with its gray version: amount (N,) 0 = gray, 1 = the image."""
    gray = (x * torch.tensor([0.299, 0.587, 0.114])[:, None, None]).sum(1, keepdim=True).expand_as(x)
    a = amount.view(-1, 1, 1, 1)
    return gray + a * (x - gray)


def s_knob_data(clean: torch.Tensor, seed: int = 0, lq_shows_colour: bool = False) -> dict:
    """GTs whose quality varies (colour: saturation q for a drawn quality q in [0, 1]) and an LQ
    made from each GT's face: gray, blurred and noisy, so that it hides the GT's quality
    (`lq_shows_colour`: the LQ is made from the GT itself and keeps its colours). Bins floor(10 q)."""
    g = torch.Generator().manual_seed(seed)
    q = torch.rand(len(clean), generator=g)
    gt = saturate(clean, q)
    source = gt if lq_shows_colour else saturate(clean, torch.zeros(len(clean)))
    lq = (blur(source, 1.0) + 0.03 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    return {"gt": gt, "lq": lq, "quality": q, "bins": torch.clamp((q * 10).floor(), 0, 9).long()}


def train_s_knob(d: dict, steps: int = 300, conditioned: bool = True, seed: int = 0, lr: float = 3e-3) -> ToyConditioned:
    """Fit LQ -> GT with (or without) the score embedding; batches of 16, L1 loss."""
    torch.manual_seed(seed)
    model = ToyConditioned(d["gt"].shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        i = torch.randint(0, len(d["gt"]), (16,), generator=g)
        loss = F.l1_loss(model(d["lq"][i], d["bins"][i] if conditioned else None), d["gt"][i])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def s_sweep(model, lq: torch.Tensor, scores=(0.05, 0.25, 0.45, 0.65, 0.85, 0.95)) -> dict:
    """Outputs of `model(lq, bins)` at each requested S, and their mean colourfulness."""
    out = {s: model(lq, torch.full((len(lq),), min(int(s * 10), 9))) for s in scores}
    return {"outputs": out, "colourfulness": {s: mean_colourfulness(y) for s, y in out.items()}}


def mean_colourfulness(x: torch.Tensor) -> float:
    """Mean Hasler-Suesstrunk colourfulness (iqpfr.colour; 0 = gray) of images (N, 3, R, R) in [0, 1]."""
    return float(np.mean([colourfulness(img) for img in x.permute(0, 2, 3, 1).numpy()]))


# -- 5. optimising a judge: through the codes or not -----------------------------------------------

@dataclass
class Ascent:
    judge: list  # the judge's mean score per step
    truth: list  # mean true quality (SSIM to the clean faces) per step
    off_codebook: list  # mean squared distance of the decoded latent to its nearest code, per step (0: made of codes)
    images: torch.Tensor  # the final images (N, 3, R, R)


def quality_ascent(vq: DualCodebookVQGAN, judge: IqaNet, lq: torch.Tensor, clean: torch.Tensor, steps: int = 60,
                   discrete: bool = True, lr: float = 0.05, anchor: float = 1.0) -> Ascent:
    """Start from the LQ's latent z0 = E(x_l) and ascend the judge's score of G(.) with Adam on z,
    minimising max(0, 1 - Q) + anchor * mean((z - z0)^2) (the anchor stands in for the method's
    code and feature losses, which keep z near the LQ's codes): `discrete` decodes the quantised
    codes with the straight-through estimator (the method's quality loss), otherwise G decodes z
    itself (the continuous counter-example). G, the codes and the judge stay frozen."""
    vq.eval().requires_grad_(False)
    judge.eval().requires_grad_(False)
    with torch.no_grad():
        z0 = vq.encode(lq * 2 - 1)
    z = z0.clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    judge_curve, truth_curve, off = [], [], []

    def decode(z: torch.Tensor) -> torch.Tensor:
        if discrete:
            zq, _, _ = vq.quant_c(z)  # z + sg(C[nearest] - z)
            z = zq
        with torch.no_grad():
            off.append(float((z - vq.quant_c.lookup(vq.quant_c.nearest(z))).pow(2).mean()))
        return ((vq.decode(z) + 1) / 2).clamp(0, 1)

    for step in range(steps + 1):
        x = decode(z)
        score = judge.score(x)
        judge_curve.append(float(score.detach().mean()))
        truth_curve.append(float(np.mean([true_quality(a, b) for a, b in zip(x.detach().permute(0, 2, 3, 1).numpy(),
                                                                              clean.permute(0, 2, 3, 1).numpy())])))
        if step == steps:
            break
        loss = F.relu(1 - score).mean() + anchor * (z - z0).pow(2).mean()  # L_q of the method, anchored
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Ascent(judge_curve, truth_curve, off, x.detach())
