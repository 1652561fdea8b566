"""Stage II: the quality-conditioned code-prediction Transformer (SPEC 1.4-1.6). Torch only.

A degraded face x_l goes through the (trainable) stage-I encoder to z_l (B, D, r, r). Its quality
condition is the score bin s = clamp(floor(10 S), 0, 9) of the wanted quality S:

    "add"   (the paper's): z_l <- E(x_l) + Emb[s], a learned latent-shaped map per bin (eq. 12)
    "adaln" (ablation):    z_l <- E(x_l); every layer's pre-norms are modulated by a shift, scale
                           and gate computed from a learned vector per bin (DiT-style adaLN-Zero)
    "none"  (the baseline without conditioning)

The Transformer (bidirectional; pre-LayerNorm; GELU; learned positional embedding added to the
queries and keys) reads the r*r tokens projected to d_model and predicts, for every token, logits
over the common codebook C and over the HQ+ codebook H (eq. 13-14).

With `patch` p > 1 (ours) it attends over (r/p)^2 positions instead of r^2: each position reads the
p x p tokens of its patch (their latents concatenated, D p^2 features) and predicts the codes of all
p x p of them (heads of p^2 K logits). The logits come back as one row per token, in the latent's
raster order, so losses and decoding are the same for every p. p = 1 is the paper's Transformer.

`codebooks: common` is the single-codebook baseline (CodeFormer-style): the H head is neither
trained nor used, the feature target is C[idx_c] and decoding uses C alone (lambda = 0).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

NUM_BINS = 10


@dataclass(frozen=True)
class TransformerConfig:
    """Stage-II architecture (stored inside every checkpoint). Paper: 9 layers, 8 heads, d 512, FFN 1024."""

    latent_size: int = 16
    emb_dim: int = 256
    codebook_size: int = 1024
    n_layers: int = 9
    n_heads: int = 8
    d_model: int = 512
    d_ff: int = 1024
    conditioning: str = "add"  # "add" | "adaln" | "none"
    dropout: float = 0.0
    codebooks: str = "dual"  # "dual" (C and HQ+ H, the method) | "common" (C only: the single-codebook baseline)
    fidelity_resolutions: tuple[int, ...] = ()  # CodeFormer's fusion blocks (imported weights only): e.g. (32, 64, 128, 256)
    null_bin: bool = False  # an extra "no score" bin (index NUM_BINS), trained by score dropout, used by guidance
    score_trend: bool = False  # "add" only: Emb[k] = R[k] + c_k D, a trend map D shared by the bins (ours; see `condition`)
    patch: int = 1  # tokens per position side: attention over (latent_size / patch)^2 positions (ours; 1: the paper's)

    def __post_init__(self):
        object.__setattr__(self, "fidelity_resolutions", tuple(self.fidelity_resolutions))
        if self.conditioning not in ("add", "adaln", "none"):
            raise ValueError(f"conditioning must be add, adaln or none, got {self.conditioning!r}")
        if self.codebooks not in ("dual", "common"):
            raise ValueError(f"codebooks must be dual or common, got {self.codebooks!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.null_bin and self.conditioning == "none":
            raise ValueError("null_bin needs a score-conditioned model (conditioning add or adaln)")
        if self.score_trend and self.conditioning != "add":
            raise ValueError(f"score_trend is a form of the additive embedding: conditioning add, got {self.conditioning!r}")
        if self.patch < 1 or self.latent_size % self.patch:
            raise ValueError(f"patch {self.patch} must be >= 1 and divide latent_size {self.latent_size}")

    @property
    def bins(self) -> int:
        """Rows of the score embedding: the 10 score bins, plus the "no score" bin where present."""
        return NUM_BINS + int(self.null_bin)

    @property
    def tokens(self) -> int:
        """Codes per codebook and image: r*r."""
        return self.latent_size ** 2

    @property
    def positions(self) -> int:
        """Sequence length the Transformer attends over: (r / patch)^2."""
        return (self.latent_size // self.patch) ** 2


def to_patches(z: torch.Tensor, p: int) -> torch.Tensor:
    """Latent (B, D, r, r) -> one row per p x p patch, (B, (r/p)^2, D p^2), patches in raster order."""
    return F.pixel_unshuffle(z, p).flatten(2).transpose(1, 2)


def from_patches(logits: torch.Tensor, p: int, r: int) -> torch.Tensor:
    """Patch logits (B, (r/p)^2, p^2 K), ordered (row in patch, column in patch, code), -> one row
    per token in the r x r latent's raster order, (B, r*r, K)."""
    b, n = logits.shape[0], r // p
    x = logits.view(b, n, n, p, p, -1)  # (B, patch row, patch col, row in patch, col in patch, K)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(b, r * r, -1)


def score_to_bin(score: torch.Tensor) -> torch.Tensor:
    """S in [0,1] (B,) -> bin floor(10 S) clamped to 0..9 (B,) long."""
    return torch.clamp(torch.floor(score * NUM_BINS), 0, NUM_BINS - 1).long()


def ordinal_coefficients(bins: torch.Tensor) -> torch.Tensor:
    """The trend's weight c_k = (k - 4.5) / 4.5 for score bins k in 0..9 (-1 ... 1), 0 for the "no
    score" bin (index NUM_BINS): (B,) long -> (B,) float."""
    half = (NUM_BINS - 1) / 2
    c = (bins.float() - half) / half
    return torch.where(bins < NUM_BINS, c, torch.zeros_like(c))


class Block(nn.Module):
    """Pre-LN self-attention + FFN; the positional embedding is added to queries and keys only."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.norm1 = nn.LayerNorm(cfg.d_model, elementwise_affine=cfg.conditioning != "adaln")
        self.qk = nn.Linear(cfg.d_model, 2 * cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.norm2 = nn.LayerNorm(cfg.d_model, elementwise_affine=cfg.conditioning != "adaln")
        self.ffn = nn.Sequential(nn.Linear(cfg.d_model, cfg.d_ff), nn.GELU(), nn.Dropout(cfg.dropout),
                                 nn.Linear(cfg.d_ff, cfg.d_model))
        self.drop = nn.Dropout(cfg.dropout)

    def attend(self, h: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        q, k = self.qk(h + pos).chunk(2, dim=-1)  # (B, T, d) each
        v = self.v(h)
        split = lambda x: x.view(b, t, self.n_heads, d // self.n_heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (B, heads, T, d/heads)
        return self.proj(out.transpose(1, 2).reshape(b, t, d))

    def forward(self, x: torch.Tensor, pos: torch.Tensor, mod: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, d); pos (1, T, d); mod (B, 6, d) = shift/scale/gate for attention and FFN, or None."""
        if mod is None:
            x = x + self.drop(self.attend(self.norm1(x), pos))
            return x + self.drop(self.ffn(self.norm2(x)))
        sh1, sc1, g1, sh2, sc2, g2 = mod.unbind(1)  # (B, d) each
        h = self.norm1(x) * (1 + sc1[:, None]) + sh1[:, None]
        x = x + g1[:, None] * self.drop(self.attend(h, pos))
        h = self.norm2(x) * (1 + sc2[:, None]) + sh2[:, None]
        return x + g2[:, None] * self.drop(self.ffn(h))


class CodeTransformer(nn.Module):
    """z_l (B, D, r, r) [+ score bins (B,)] -> logits over C and over H, each (B, r*r, K)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.score_map = (nn.Parameter(torch.zeros(cfg.bins, cfg.emb_dim, cfg.latent_size, cfg.latent_size))
                          if cfg.conditioning == "add" else None)
        self.score_map_trend = (nn.Parameter(torch.zeros(cfg.emb_dim, cfg.latent_size, cfg.latent_size))
                                if cfg.score_trend else None)  # its name puts it in the score embedding's lr group
        if cfg.conditioning == "adaln":
            self.score_vec = nn.Embedding(cfg.bins, d)
            self.modulation = nn.ModuleList([nn.Linear(d, 6 * d) for _ in range(cfg.n_layers)])
            for m in self.modulation:  # adaLN-Zero: every block starts as the identity
                nn.init.zeros_(m.weight)
                nn.init.zeros_(m.bias)
        per = cfg.patch ** 2  # tokens per position
        self.proj_in = nn.Linear(cfg.emb_dim * per, d)
        self.pos = nn.Parameter(torch.zeros(1, cfg.positions, d))
        nn.init.normal_(self.pos, std=0.02)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.norm_out = nn.LayerNorm(d)
        self.head_c = nn.Linear(d, cfg.codebook_size * per, bias=False)  # bias-free, as CodeFormer's idx_pred_layer
        self.head_h = nn.Linear(d, cfg.codebook_size * per, bias=False)
        for name, mod in self.named_modules():  # small init (nanoGPT): logits start near uniform, CE ~ ln K
            if isinstance(mod, nn.Linear) and not name.startswith("modulation"):
                nn.init.normal_(mod.weight, std=0.02)
                if mod.bias is not None:
                    nn.init.zeros_(mod.bias)

    def embedding(self, bins: torch.Tensor) -> torch.Tensor:
        """Emb[bin] of the "add" conditioning, (B,) -> (B, D, r, r).

        With `score_trend` the table is learned as Emb[k] = R[k] + c_k D (`ordinal_coefficients`):
        the trend map D is shared by every bin and learns from every GT the direction in which the
        targets change with quality, so the rare low bins sit at -D from the top bins instead of
        near their zero start (benchmarks/score_embedding.py measured it). Same function class as
        the paper's table (eq. 12), another optimisation; the "no score" bin has no trend."""
        emb = self.score_map[bins]
        if self.score_map_trend is not None:
            emb = emb + ordinal_coefficients(bins).view(-1, 1, 1, 1) * self.score_map_trend
        return emb

    def condition(self, z: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
        """eq. 12 for "add": z + Emb[bin] (B, D, r, r); the latent unchanged otherwise."""
        if self.score_map is None:
            return z
        if bins is None:
            raise ValueError("this model is score-conditioned: give a score bin per image")
        return z + self.embedding(bins)

    def forward(self, z_cond: torch.Tensor, bins: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """z_cond: the (already conditioned) latent (B, D, r, r). Returns (logits_c, logits_h), (B, T, K)
        with T = r*r in raster order (whatever the patch)."""
        p, r = self.cfg.patch, self.cfg.latent_size
        x = self.proj_in(to_patches(z_cond, p))  # (B, P, d), P = (r/p)^2 positions
        c = None
        if self.cfg.conditioning == "adaln":
            if bins is None:
                raise ValueError("this model is score-conditioned: give a score bin per image")
            c = F.silu(self.score_vec(bins))  # (B, d)
        for i, blk in enumerate(self.blocks):
            mod = self.modulation[i](c).view(-1, 6, self.cfg.d_model) if c is not None else None
            x = blk(x, self.pos, mod)
        x = self.norm_out(x)
        return from_patches(self.head_c(x), p, r), from_patches(self.head_h(x), p, r)


def code_losses(logits_c: torch.Tensor, logits_h: torch.Tensor, idx_c: torch.Tensor, idx_h: torch.Tensor,
                codebooks: str = "dual") -> torch.Tensor:
    """L_code = 0.5 CE(l_c, idx_c) + 0.5 CE(l_h, idx_h) (eq. 15); logits (B, T, K), indices (B, T).
    With codebooks="common" (the baseline) only CE(l_c, idx_c)."""
    k = logits_c.shape[-1]
    ce_c = F.cross_entropy(logits_c.reshape(-1, k), idx_c.reshape(-1))
    if codebooks == "common":
        return ce_c
    return 0.5 * ce_c + 0.5 * F.cross_entropy(logits_h.reshape(-1, k), idx_h.reshape(-1))


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match the per-channel mean and std of `content` (B, D, r, r) to those of `style` (SPEC 1.6).
    std = sqrt(unbiased variance over the r*r positions + eps), as CodeFormer computes it."""
    def mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean((2, 3), keepdim=True), (x.var((2, 3), keepdim=True) + eps).sqrt()  # (B, D, 1, 1) each

    (cm, cs), (sm, ss) = mean_std(content), mean_std(style)
    return (content - cm) / cs * ss + sm


class QualityRestorer(nn.Module):
    """The stage-II restorer: a trainable encoder (initialised from stage I), the code Transformer
    with its score conditioning, and the frozen stage-I codebooks and generator.

    Images are (B, 3, R, R) in [0,1] at the interface; the networks see [-1,1].
    """

    def __init__(self, stage1, cfg: TransformerConfig):
        super().__init__()
        import copy

        self.cfg = cfg
        self.encoder = copy.deepcopy(stage1.encoder).requires_grad_(True)
        self.transformer = CodeTransformer(cfg)
        self.stage1 = stage1.eval().requires_grad_(False)  # C, H and G stay frozen
        self.hq_weight = stage1.cfg.hq_weight if cfg.codebooks == "dual" else 0.0
        self.guidance = 1.0  # restore()'s default guidance (set by whoever loads the model: load_restorer)
        self.fidelity = None  # CodeFormer's fusion blocks (iqpfr.fidelity), present only in imported models
        if cfg.fidelity_resolutions:
            from .fidelity import FidelityFusion

            taps = self.encoder.taps
            missing = [r for r in cfg.fidelity_resolutions if r not in taps or r not in stage1.generator.taps]
            if missing:
                raise ValueError(f"fidelity_resolutions {missing} are not resolutions of this encoder/generator")
            channels = {r: self.encoder.blocks[taps[r]].conv2.out_channels for r in cfg.fidelity_resolutions}
            self.fidelity = FidelityFusion(channels).requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.stage1.eval()  # frozen modules never switch to training behaviour
        return self

    def trainable_parameters(self):
        return list(self.encoder.parameters()) + list(self.transformer.parameters())

    def latent(self, x01: torch.Tensor, bins: torch.Tensor | None) -> torch.Tensor:
        """z_l = E(x_l) + Emb[bin] (B, D, r, r) (eq. 12; no embedding for adaln/none)."""
        return self.transformer.condition(self.encoder(x01 * 2 - 1), bins)

    def codes(self, idx_c: torch.Tensor, idx_h: torch.Tensor, hq_weight: float | None = None) -> torch.Tensor:
        """C[idx_c] + lambda H[idx_h] for indices (B, T) -> (B, D, r, r) (eq. 17); C alone for a
        single-codebook model or lambda = 0."""
        r = self.cfg.latent_size
        lam = self.hq_weight if hq_weight is None else hq_weight
        zc = self.stage1.quant_c.lookup(idx_c.view(-1, r, r))
        if self.cfg.codebooks == "common" or lam == 0:
            return zc
        return zc + lam * self.stage1.quant_h.lookup(idx_h.view(-1, r, r))

    def decode(self, z: torch.Tensor, fuse=None) -> torch.Tensor:
        """Frozen generator: z (B, D, r, r) -> image (B, 3, R, R) in [0,1] (`fuse`: see Generator)."""
        return ((self.stage1.generator(z, fuse) + 1) / 2).clamp(0, 1)

    def guided_logits(self, z: torch.Tensor, bins: torch.Tensor, guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """Code logits (B, T, K) for C and H from the unconditioned latent z = E(x_l) (B, D, r, r) at
        score bins (B,). With guidance w != 1 (classifier-free guidance; needs the "no score" bin):
            l = l_none + w (l_S - l_none)
        w > 1 pushes the codes further in the direction the score moves them."""
        lc, lh = self.transformer(self.transformer.condition(z, bins), bins)
        if guidance == 1.0:
            return lc, lh
        if not self.cfg.null_bin:
            raise ValueError(f"guidance {guidance} needs a model trained with score dropout (it has no 'no score' bin); use 1.0")
        none = torch.full_like(bins, NUM_BINS)
        uc, uh = self.transformer(self.transformer.condition(z, none), none)
        return uc + guidance * (lc - uc), uh + guidance * (lh - uh)

    @torch.no_grad()
    def restore(self, x01: torch.Tensor, score: float = 0.95, hq_weight: float | None = None,
                use_adain: bool = True, continuous: bool = False, fidelity: float = 0.0,
                guidance: float | None = None) -> torch.Tensor:
        """Inference (SPEC 1.6): LQ (B, 3, R, R) in [0,1] at quality S -> restored (B, 3, R, R) in [0,1].
        `fidelity` is CodeFormer's w (0: off; needs a model with fusion blocks).
        `guidance` scales the score's effect on the code logits (see `guided_logits`; 1.0: off;
        None: the model's own `guidance`).
        `continuous=True` decodes the unquantised latent G(z_l) instead (what the "continuous"
        counter-example optimised; not the method)."""
        if not 0.0 <= fidelity <= 1.0:
            raise ValueError(f"fidelity must be in [0, 1], got {fidelity}")
        if fidelity > 0 and self.fidelity is None:
            raise ValueError("this model has no fidelity (fusion) blocks: only imported CodeFormer-family "
                             "checkpoints do; use fidelity 0")
        bins = score_to_bin(torch.full((x01.shape[0],), float(score), device=x01.device))
        fuse = None
        if fidelity > 0:
            z, feats = self.encoder.forward_with_features(x01 * 2 - 1, self.fidelity.resolutions)
            fuse = self.fidelity.hook(feats, fidelity)
        else:
            z = self.encoder(x01 * 2 - 1)
        z_l = self.transformer.condition(z, bins)
        if continuous:
            return self.decode(z_l)
        lc, lh = self.guided_logits(z, bins, self.guidance if guidance is None else guidance)
        z_hat = self.codes(lc.argmax(-1), lh.argmax(-1), hq_weight)
        if use_adain:
            z_hat = adain(z_hat, z_l)
        return self.decode(z_hat, fuse)
