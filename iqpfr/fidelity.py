"""CodeFormer's controllable feature transform (the fidelity weight w), as an option of the restorer.

CodeFormer (Zhou et al. 2022, sec. 3.3) lets the LQ encoder's features steer the frozen
generator: at a few resolutions, a block reads the encoder's feature F_e and the generator's
feature F_d (both (B, C, res, res)) and returns

    F_d + w * (F_d * alpha + beta),      (alpha, beta) = (P_a(h), P_b(h)),   h = ResBlock([F_e, F_d])

where [.,.] concatenates channels, ResBlock maps 2C -> C channels and P_a, P_b are
conv3x3 - LeakyReLU(0.2) - conv3x3. w = 0 (the IQPFR authors' setting) switches the blocks off and
the output is made of codebook entries alone; w -> 1 trades quality for fidelity to the input.

Only imported checkpoints carry these blocks (`iqpfr import-weights`): nothing in this project
trains them (CodeFormer trains them in a third stage). This module imports torch only.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .vqgan import ResBlock


class SFTBlock(nn.Module):
    """One fusion block at C channels (CodeFormer's `Fuse_sft_block`; parameter names kept)."""

    def __init__(self, ch: int):
        super().__init__()
        self.encode_enc = ResBlock(2 * ch, ch)
        self.scale = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, 1, 1))
        self.shift = nn.Sequential(nn.Conv2d(ch, ch, 3, 1, 1), nn.LeakyReLU(0.2), nn.Conv2d(ch, ch, 3, 1, 1))

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        """enc, dec (B, C, res, res) -> dec + w (dec * alpha + beta), same shape."""
        h = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(h) + self.shift(h))


class FidelityFusion(nn.Module):
    """The SFT blocks of a restorer, one per resolution; `channels` maps res -> C.
    Keys of the state dict are the resolutions as strings (as in CodeFormer's `fuse_convs_dict`)."""

    def __init__(self, channels: dict[int, int]):
        super().__init__()
        self.blocks = nn.ModuleDict({str(r): SFTBlock(c) for r, c in sorted(channels.items())})

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(int(r) for r in self.blocks)

    def hook(self, feats: dict[int, torch.Tensor], w: float):
        """The generator's `fuse(res, h)` callback for encoder features {res: (B, C, res, res)}."""
        return lambda res, h: self.blocks[str(res)](feats[res], h, w) if str(res) in self.blocks else h

