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

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Codes for indices (B, H, W) -> (B, D, H, W)."""
        return self.embedding(indices).permute(0, 3, 1, 2).contiguous()

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Quantise z (B, D, H, W).

        Returns (z_q with the straight-through gradient (B, D, H, W), indices (B, H, W), losses) where
        losses holds per-sample (B,) `codebook` and `commitment` terms (mean over D, H, W), so that
        a caller can gate them per sample.
        """
        idx = self.nearest(z.detach())
        zq = self.lookup(idx)
        codebook = (zq - z.detach()).pow(2).mean((1, 2, 3))
        commitment = self.beta * (z - zq.detach()).pow(2).mean((1, 2, 3))
        z_st = z + (zq - z).detach()
        return z_st, idx, {"codebook": codebook, "commitment": commitment}


def code_usage(indices: torch.Tensor, num_codes: int) -> dict[str, float]:
    """Perplexity exp(H(p)) of the code histogram and the fraction of codes used, for indices of any shape."""
    counts = torch.bincount(indices.reshape(-1), minlength=num_codes).float()
    p = counts / counts.sum().clamp(min=1)
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"perplexity": float(entropy.exp()), "usage": float((counts > 0).float().mean())}
