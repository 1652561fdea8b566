"""Stage I: the dual-codebook VQGAN (SPEC 1.2).

One encoder E maps a face x (B, 3, R, R) in [-1, 1] to a latent z (B, D, R/f, R/f) with
f = 2^(len(ch_mult) - 1). Two nearest-neighbour quantisers read the *same* z:

    z_c = Q_C(z)   the common codebook C, trained on every GT
    z_h = Q_H(z)   the HQ+ codebook H, trained only on GTs whose quality score passes the gate

and the generator G decodes the fusion z_hat = z_c + lambda * m * z_h, with the per-sample gate
m = 1[S(x) > S_thr] (at test time m = 1). The PatchGAN discriminator judges G's output.

Every size comes from `VQGANConfig`: the paper config (nf 64, ch_mult [1,2,2,4,4,8], two res
blocks, attention at 16, emb 256, two 1024 x 256 codebooks: 512 px -> 16 x 16 tokens), the CPU
default and the tiny test configs share this code.

This module imports torch only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantize import VectorQuantizer


@dataclass(frozen=True)
class VQGANConfig:
    """Architecture of the stage-I model (stored inside every checkpoint)."""

    resolution: int = 512
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    num_res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    emb_dim: int = 256
    codebook_size: int = 1024
    beta: float = 0.25
    hq_weight: float = 0.8  # lambda in z_c + lambda * m * z_h
    fusion: str = "add"  # "add" (the paper's) or "attention" (ablation: query z_c, key/value z_h)
    fusion_heads: int = 4
    disc_nf: int = 64
    disc_layers: int = 4  # the paper's PatchGAN: 4 layers, BatchNorm, LeakyReLU(0.2)

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        if self.fusion not in ("add", "attention"):
            raise ValueError(f"fusion must be 'add' or 'attention', got {self.fusion!r}")
        if self.resolution % self.downsample_factor:
            raise ValueError(f"resolution {self.resolution} is not divisible by {self.downsample_factor}")

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def latent_size(self) -> int:
        return self.resolution // self.downsample_factor


def _norm(ch: int) -> nn.GroupNorm:
    """GroupNorm(32) as in the paper; fewer groups (a divisor of ch) for narrow tiny configs."""
    return nn.GroupNorm(math.gcd(32, ch), ch, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, 1, 1)
        self.norm2, self.conv2 = _norm(cout), nn.Conv2d(cout, cout, 3, 1, 1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection.

    Laid out as CodeFormer's VQGAN lays it out (so that released weights map one to one): GroupNorm,
    three 1x1 convolutions q, k, v of C -> C channels, softmax(q^T k / sqrt(C)) v, a 1x1 `proj_out`.
    """

    def __init__(self, ch: int):
        super().__init__()
        self.norm = _norm(ch)
        self.q, self.k, self.v = (nn.Conv2d(ch, ch, 1) for _ in range(3))
        self.proj_out = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (conv(hn).reshape(b, c, h * w).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, HW, C), scale 1/sqrt(C)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """x2 downsampling as in CodeFormer's VQGAN: zero-pad one row/column at the bottom/right, then a
    3x3 convolution with stride 2 and no padding (not the symmetric padding=1 convolution)."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))  # (B, C, H, W) -> (B, C, H/2, W/2)


class Encoder(nn.Module):
    """x (B, 3, R, R) in [-1,1] -> z (B, emb_dim, R/f, R/f).

    Laid out as CodeFormer's encoder: conv_in, per level `num_res_blocks` ResBlocks (attention after
    each at `attn_resolutions`) and a Downsample, then ResBlock-Attn-ResBlock, GroupNorm and conv_out
    (no activation between the last GroupNorm and conv_out). `taps[res]` is the index in `blocks`
    whose output is the level's feature for the fidelity fusion: the level's last ResBlock (before
    its attention), CodeFormer's `fuse_encoder_block` less one (their list counts conv_in).
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.conv_in = nn.Conv2d(3, cfg.nf, 3, 1, 1)
        blocks, ch, res = [], cfg.nf, cfg.resolution
        self.taps: dict[int, int] = {}
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, cfg.nf * mult))
                ch = cfg.nf * mult
                self.taps[res] = len(blocks) - 1
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if i < len(cfg.ch_mult) - 1:
                blocks.append(Downsample(ch))
                res //= 2
        blocks += [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, cfg.emb_dim, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.conv_in(x))  # (B, nf*ch_mult[-1], R/f, R/f)
        return self.conv_out(self.norm_out(h))

    def forward_with_features(self, x: torch.Tensor, resolutions: tuple[int, ...]) -> tuple[torch.Tensor, dict]:
        """Like `forward`, also returning {res: feature (B, C_res, res, res)} at the taps of `resolutions`."""
        want = {self.taps[r]: r for r in resolutions}
        feats, h = {}, self.conv_in(x)
        for i, blk in enumerate(self.blocks):
            h = blk(h)
            if i in want:
                feats[want[i]] = h
        return self.conv_out(self.norm_out(h)), feats


class Upsample(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Generator(nn.Module):
    """z_hat (B, emb_dim, R/f, R/f) -> x (B, 3, R, R), unbounded (trained towards [-1,1]).

    CodeFormer's generator layout: conv_in, ResBlock-Attn-ResBlock, per level (coarse to fine)
    ResBlocks (attention at `attn_resolutions`) and an Upsample, then GroupNorm and conv_out (no
    activation between them). `taps[res]` is where the fidelity fusion acts: the first ResBlock of
    each level finer than the latent, the last ResBlock of the latent level (before its attention);
    CodeFormer's `fuse_generator_block` less one.
    """

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        ch = cfg.nf * cfg.ch_mult[-1]
        res = cfg.latent_size
        self.conv_in = nn.Conv2d(cfg.emb_dim, ch, 3, 1, 1)
        blocks = [ResBlock(ch, ch), AttnBlock(ch), ResBlock(ch, ch)]
        self.taps: dict[int, int] = {}
        for i in reversed(range(len(cfg.ch_mult))):
            for j in range(cfg.num_res_blocks):
                blocks.append(ResBlock(ch, cfg.nf * cfg.ch_mult[i]))
                ch = cfg.nf * cfg.ch_mult[i]
                if res == cfg.latent_size or j == 0:
                    self.taps[res] = len(blocks) - 1
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(ch))
            if i > 0:
                blocks.append(Upsample(ch))
                res *= 2
        self.blocks = nn.Sequential(*blocks)
        self.norm_out = _norm(ch)
        self.conv_out = nn.Conv2d(ch, 3, 3, 1, 1)

    def forward(self, z: torch.Tensor, fuse=None) -> torch.Tensor:
        """`fuse(res, h) -> h`, if given, is applied to the output of the block at `taps[res]`."""
        if fuse is None:
            h = self.blocks(self.conv_in(z))  # (B, nf, R, R)
        else:
            at = {i: r for r, i in self.taps.items()}
            h = self.conv_in(z)
            for i, blk in enumerate(self.blocks):
                h = blk(h)
                if i in at:
                    h = fuse(at[i], h)
        return self.conv_out(self.norm_out(h))

    @property
    def last_layer(self) -> torch.Tensor:
        """The weight the adaptive GAN weight is measured on."""
        return self.conv_out.weight


class PatchDiscriminator(nn.Module):
    """PatchGAN: x (B, 3, R, R) in [-1,1] -> logits (B, 1, r, r), one per overlapping patch."""

    def __init__(self, nf: int = 64, n_layers: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = nf
        for n in range(1, n_layers + 1):
            out = nf * min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class AttentionFusion(nn.Module):
    """Ablation fusion: z_c attends to z_h (multi-head), result added to z_c."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, zc: torch.Tensor, zh: torch.Tensor) -> torch.Tensor:
        b, d, h, w = zc.shape
        q, kv = zc.flatten(2).transpose(1, 2), zh.flatten(2).transpose(1, 2)  # (B, hw, D)
        out, _ = self.attn(q, kv, kv, need_weights=False)
        return out.transpose(1, 2).reshape(b, d, h, w)


class DualCodebookVQGAN(nn.Module):
    """Encoder, the two codebooks and the generator (the discriminator lives apart)."""

    def __init__(self, cfg: VQGANConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.quant_c = VectorQuantizer(cfg.codebook_size, cfg.emb_dim, cfg.beta)
        self.quant_h = VectorQuantizer(cfg.codebook_size, cfg.emb_dim, cfg.beta)
        self.generator = Generator(cfg)
        self.fusion = AttentionFusion(cfg.emb_dim, cfg.fusion_heads) if cfg.fusion == "attention" else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, R, R) in [-1,1] -> z (B, D, r, r)."""
        return self.encoder(x)

    def fuse(self, zc: torch.Tensor, zh: torch.Tensor, gate: torch.Tensor, hq_weight: float | None = None) -> torch.Tensor:
        """z_hat = z_c + lambda * m * h(z_c, z_h) with h = z_h ("add") or attention; gate m (B,) in {0,1}."""
        lam = self.cfg.hq_weight if hq_weight is None else hq_weight
        hq = zh if self.fusion is None else self.fusion(zc, zh)
        return zc + lam * gate.to(zc.dtype).view(-1, 1, 1, 1) * hq

    def quantize(self, z: torch.Tensor, gate: torch.Tensor | None = None,
                 hq_weight: float | None = None) -> tuple[torch.Tensor, dict]:
        """Quantise z with both codebooks and fuse. gate (B,) in {0,1} (None = all ones).

        Returns z_hat (B, D, r, r) and a dict with idx_c, idx_h (B, r, r) and the per-sample VQ
        terms of each codebook; H's terms are already multiplied by the gate.
        """
        gate = torch.ones(z.shape[0], device=z.device) if gate is None else gate.float()
        zc, idx_c, loss_c = self.quant_c(z)
        zh, idx_h, loss_h = self.quant_h(z)
        loss_h = {k: v * gate for k, v in loss_h.items()}
        return self.fuse(zc, zh, gate, hq_weight), {"idx_c": idx_c, "idx_h": idx_h, "vq_c": loss_c, "vq_h": loss_h}

    def decode(self, z_hat: torch.Tensor) -> torch.Tensor:
        """z_hat (B, D, r, r) -> image (B, 3, R, R), about [-1,1]."""
        return self.generator(z_hat)

    def decode_indices(self, idx_c: torch.Tensor, idx_h: torch.Tensor, hq_weight: float | None = None) -> torch.Tensor:
        """Decode code indices (B, r, r) of both codebooks with the gate open (test time)."""
        zc, zh = self.quant_c.lookup(idx_c), self.quant_h.lookup(idx_h)
        gate = torch.ones(idx_c.shape[0], device=idx_c.device)
        return self.decode(self.fuse(zc, zh, gate, hq_weight))

    def forward(self, x: torch.Tensor, gate: torch.Tensor | None = None,
                hq_weight: float | None = None) -> tuple[torch.Tensor, dict]:
        """Reconstruct x (B, 3, R, R) in [-1,1]; see `quantize` for the dict."""
        z_hat, info = self.quantize(self.encode(x), gate, hq_weight)
        return self.decode(z_hat), info


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
