"""A prior hardened against its own over-optimisation, without a cycle: a candidate design.

`benchmarks/prior_overoptimisation.py` shows that every prior design tried so far (the pipeline's,
a low-pass one, seed ensembles) is fooled by a restorer whose latent decoding is optimised against
it: the prior's score rises to its ceiling while the true quality does not follow. This design
adds such over-optimised images to the prior's training data, made without the pipeline's
restorers, its training GTs or its test pairs:

1. the helper restorer (iqpfr/helper.py: a separately seeded VQ autoencoder trained on the IQA
   training split only) is trained as the `iqa_helper` stage trains it;
2. round r = 1 .. R: a copy of it has its encoder fine-tuned against the current prior P_{r-1}, as
   the continuous counter-example fine-tunes its latent (the generator frozen, the latent decoded
   without the codebook lookup):

       y = G(E(x_lq)),   L = |y - x_iqa|_1 + w * mean(max(0, 1 - Q_{r-1}(y)))

   on degraded IQA training images x_lq = degrade(x_iqa); snapshots along the way (mildly to
   severely over-optimised) restore fresh degraded IQA images, each labelled with its true quality
   (luma SSIM to the IQA image's pristine render, as every prior label);
3. P_r trains on the pipeline prior's data plus every round's labelled snapshots.

The prior then knows what "pushed up against a prior" looks like, and that it is not better. Not a
pipeline stage: `prior_overoptimisation.py --designs harden=2` measures it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from iqpfr import world
from iqpfr.config import Params
from iqpfr.helper import degraded, train_helper
from iqpfr.pipeline import _load_stack
from iqpfr.task import FACE


@dataclass(frozen=True)
class Hardening:
    rounds: int = 2
    steps: int = 200  # encoder fine-tuning steps a round
    snapshots: int = 3  # outputs taken after steps * k / snapshots, k = 1 .. snapshots
    per_snapshot: int = 1000  # fresh degraded IQA images each snapshot restores
    weight: float = 1.0  # w: the quality term's weight against the L1 term
    batch_size: int = 16
    lr: float = 4.0e-4

    def __post_init__(self):
        if not 1 <= self.snapshots <= self.steps:
            raise ValueError(f"hardening: {self.snapshots} snapshots need 1 .. steps ({self.steps}) of them")


def iqa_split(iqa: Path = FACE.iqa / "train") -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """The IQA training images, their pristine renders (N, 3, R, R) in [0, 1] and true quality (N,)."""
    x, frame = _load_stack(iqa)
    oracle, _ = _load_stack(iqa, "oracle_file")
    return x, oracle, frame["true_quality"].to_numpy()


def helper_model(params: Params, x: torch.Tensor, q: np.ndarray, progress=print):
    """The `iqa_helper` stage's autoencoder: trained on the IQA images of true quality >= helper.min_quality."""
    keep = torch.from_numpy(q >= params.helper.min_quality)
    model, _ = train_helper(x[keep], params.data, params.vqgan, params.helper, progress=lambda line: None)
    progress(f"helper trained on {int(keep.sum())} IQA images")
    return model


@torch.no_grad()
def decode_latent(model, lq: torch.Tensor, batch: int = 128) -> torch.Tensor:
    """y = G(E(x)) (no codebook lookup) for x (N, 3, R, R) in [0, 1] -> (N, 3, R, R) on the 8-bit grid."""
    model.eval()
    y = torch.cat([model.decode(model.encode(lq[i:i + batch] * 2 - 1)) for i in range(0, len(lq), batch)])
    return torch.round(((y + 1) / 2).clamp(0, 1) * 255) / 255


def labelled(y: torch.Tensor, oracle: torch.Tensor) -> np.ndarray:
    """Each image's true quality (the IQA labels' definition): (N,)."""
    return np.array([world.true_quality(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy())
                     for a, b in zip(y, oracle)])


def over_optimised(helper, q: torch.nn.Module, x: torch.Tensor, oracle: torch.Tensor, params: Params,
                   h: Hardening, seed: int, progress=print) -> tuple[torch.Tensor, np.ndarray]:
    """One round: the helper's encoder fine-tuned against Q (x, oracle: the IQA images and renders);
    returns every snapshot's restorations (snapshots * per_snapshot, 3, R, R) and their true quality."""
    model = copy.deepcopy(helper).requires_grad_(False)
    model.encoder.requires_grad_(True)
    opt = torch.optim.Adam(model.encoder.parameters(), lr=h.lr)
    g = torch.Generator().manual_seed(seed)
    lq = degraded(x, params.degrade, seed)  # the training inputs of the fine-tuning
    every = h.steps // h.snapshots
    images, labels = [], []
    for step in range(1, h.steps + 1):
        model.train()
        idx = torch.randint(len(x), (h.batch_size,), generator=g)
        y = ((model.decode(model.encode(lq[idx] * 2 - 1)) + 1) / 2).clamp(0, 1)
        score = q(y)
        loss = F.l1_loss(y, x[idx]) + h.weight * F.relu(1 - score).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % every == 0 and len(images) < h.snapshots:
            pick = torch.randperm(len(x), generator=g)[:h.per_snapshot]
            fresh = degraded(x[pick], params.degrade, seed * 1000 + step)
            out = decode_latent(model, fresh)
            truth = labelled(out, oracle[pick])
            with torch.no_grad():
                s = torch.cat([q(out[i:i + 128]) for i in range(0, len(out), 128)])
            progress(f"  round seed {seed} step {step}: Q {s.mean():.3f} (at ceiling {float((s >= 0.999).float().mean()):.2f}), "
                     f"true quality {truth.mean():.3f}")
            images.append(out)
            labels.append(truth)
    return torch.cat(images), np.concatenate(labels)
