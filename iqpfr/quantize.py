"""Nearest-neighbour vector quantisation with the straight-through estimator (VQ-VAE).

For an encoder output z (B, D, H, W) and a codebook e (K, D), each latent vector is replaced by
its nearest code, z_q = e[argmin_k ||z - e_k||^2]. The argmin has no gradient, so the forward pass
returns z + sg(z_q - z): numerically z_q, but the gradient of the decoder's loss flows to z as if
quantisation were the identity (straight-through).

Two terms train the codebook and the encoder (van den Oord et al. 2017, eq. 3):

    codebook   = || sg(z) - z_q ||^2       moves the codes towards the encoder outputs
    commitment = beta * || z - sg(z_q) ||^2  keeps the encoder committed to its codes

The taming-transformers / CodeFormer code writes `mean((sg(z_q) - z)^2) + beta * mean((z_q - sg(z))^2)`,
which puts beta on the *codebook* term instead (their "legacy" flag). We use the standard form
above and name the two terms separately so that nobody has to guess.

Codes that start where the encoder's outputs are, and stay used. Initialised uniform(-1/K, 1/K)
(SPEC 1.2) the codes sit near the origin while the encoder's outputs do not, and most codes are
never anybody's nearest: they get no gradient and the codebook collapses to a few entries. The
training loop therefore (a) sets the codebook from encoder outputs before the first step
(`init_from`) and (b) every few steps moves each code that nobody chose since the last check onto
an encoder output of the current batch (`restart_dead`, the dead-code restart of e.g. Jukebox and
SoundStream). Both pick vectors with a seeded generator, so a run is reproducible.

Quantisation runs in fp32 even inside a bf16 autocast region: a bf16 distance matrix would change
which code is nearest.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class VectorQuantizer(nn.Module):
    """A codebook of `num_codes` vectors of size `dim`, initialised uniform(-1/K, 1/K)."""

    def __init__(self, num_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.num_codes, self.dim, self.beta = num_codes, dim, beta
        self.embedding = nn.Embedding(num_codes, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / num_codes, 1.0 / num_codes)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Indices (B, H, W) of the nearest code to each vector of z (B, D, H, W)."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, self.dim)  # (BHW, D)
        e = self.embedding.weight  # (K, D)
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]  # (BHW, K)
        return dist.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def init_from(self, z: torch.Tensor, generator: torch.Generator) -> None:
        """Set every code to a distinct vector of z (B, D, H, W) drawn with `generator`
        (with repetition only when z holds fewer than K vectors)."""
        flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, self.dim)  # (BHW, D)
        pick = _draw(len(flat), self.num_codes, generator)
        self.embedding.weight.copy_(flat[pick])

    @torch.no_grad()
    def restart_dead(self, counts: torch.Tensor, z: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Move the codes whose `counts` (K,) are zero onto vectors of z (B, D, H, W); returns the
        (K,) bool mask of restarted codes."""
        dead = (counts == 0).to(self.embedding.weight.device)
        n = int(dead.sum())
        if n:
            flat = z.detach().float().permute(0, 2, 3, 1).reshape(-1, self.dim)
            self.embedding.weight[dead] = flat[_draw(len(flat), n, generator)]
        return dead

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for indices (B, H, W) -> (B, D, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise z (B, D, H, W).

        Returns (z_q with the straight-through gradient (B, D, H, W), indices (B, H, W), losses) where
        losses holds per-sample (B,) `codebook` and `commitment` terms (mean over D, H, W), so that
        a caller can gate them per sample.
        """
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            idx = self.nearest(z.detach())
            zq = self.lookup(idx)
            codebook = (zq - z.detach()).pow(2).mean((1, 2, 3))
            commitment = self.beta * (z - zq.detach()).pow(2).mean((1, 2, 3))
            z_st = z + (zq - z).detach()
        return z_st, idx, {"codebook": codebook, "commitment": commitment}


def _draw(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """k indices into range(n): distinct when n >= k, with repetition otherwise."""
    if n >= k:
        return torch.randperm(n, generator=generator)[:k]
    return torch.randint(n, (k,), generator=generator)


def code_usage(indices: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Perplexity exp(H(p)) of the code histogram and the fraction of codes used, for indices of any shape."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": float(entropy.exp()), "usage": float((counts > 0).float().mean())}
