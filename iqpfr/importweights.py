"""Released weights in: CodeFormer-family checkpoints mapped onto iqpfr's modules.

Three kinds of file are read, all through `safeload.load` (tensors only, never code):

    iqpir       the IQPFR authors' model: CodeFormer's architecture with the dual codebook
                (`quantize` = common C, `quantize_aesthetic` = HQ+ H), a 10-bin score embedding
                (`score_embed`: one 16*16*256 vector per bin, added to the encoder's latent) and a
                dual head predicting 2 x 1024 logits per token, *interleaved*: logit 2n + j is
                code n of book j, j = 0 the HQ+ book and j = 1 the common one. The fused code is
                aesthetic_weight * H[n_0] + C[n_1] (our hq_weight; the authors' inference default 0.5).
    codeformer  CodeFormer's `codeformer.pth`: the single-codebook baseline without conditioning.
    vqgan       CodeFormer's `vqgan_code1024.pth`: a stage-I autoencoder (encoder, one codebook,
                generator), written as a stage-I checkpoint that `stage1.init_from` can start from.

The EMA weights (`params_ema`) are used where present, else `params`. Every source tensor must find
its place and every shape must agree, or the file is refused with the keys named. Where our
modules hold a tensor that the source has not, the import fills it and records it in the bundle's
`mapping["filled"]`:
- a single-codebook file has no H: H is a copy of C (never read by a restorer with
  `codebooks: common`; in a stage-I start it begins where C is, at the encoder's outputs), and the
  restorer's H head is zero (never read either);
- our stage I keeps its own copy of the encoder: CodeFormer trains one encoder in stage II, so both
  copies receive it.

Layout correspondences (CodeFormer name -> iqpfr name):
    {encoder,generator}.blocks.0 / .blocks.i / last two    conv_in / blocks.(i-1) / norm_out, conv_out
    ResBlock conv_out (1x1 channel change)                 skip
    quantize / quantize_aesthetic .embedding.weight        quant_c / quant_h .embedding.weight
    position_emb (256, 512)                                transformer.pos (1, 256, 512)
    feat_emb                                               transformer.proj_in
    score_embed.weight (10, 65536)                         transformer.score_map (10, 256, 16, 16)
    ft_layers.l.self_attn.in_proj_{weight,bias} (3d, ...)  blocks.l.qk (first 2d rows), blocks.l.v (last d)
    ft_layers.l.self_attn.out_proj / linear1 / linear2     blocks.l.proj / ffn.0 / ffn.3
    idx_pred_layer.0 / .1 (no bias)                        norm_out / head_c (and head_h, see above)
    fuse_convs_dict.R (Fuse_sft_block)                     fidelity.blocks.R (iqpfr.fidelity)
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch

from . import atomic, safeload
from .transformer import QualityRestorer, TransformerConfig
from .vqgan import DualCodebookVQGAN, VQGANConfig

FORMATS = ("iqpir", "codeformer", "vqgan")
CONNECT = (32, 64, 128, 256)  # CodeFormer's default connect_list: the resolutions of its fusion blocks
AUTHORS_HQ_WEIGHT = 0.5  # the authors' inference default for aesthetic_weight (`-aw`)

Entry = tuple[tuple[int, ...], list[tuple[str, Callable[[torch.Tensor], torch.Tensor]]]]  # source shape, targets


def read_state(path: str | Path) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict of a released checkpoint: its `params_ema` where present, else `params`
    (or the file itself when it is a flat dict of tensors). Returns (state, which)."""
    obj = safeload.load(path, "released checkpoint")
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    for key in ("params_ema", "params"):
        if key in obj:
            obj, which = obj[key], key
            break
    else:
        which = "top level"
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: {which} holds entries that are not tensors: {bad[:5]}")
    return dict(obj), which


def detect_format(keys) -> str:
    """iqpir | codeformer | vqgan from a state dict's key names."""
    keys = set(keys)
    if "quantize_aesthetic.embedding.weight" in keys or any(k.startswith("score_embed") for k in keys):
        return "iqpir"
    if any(k.startswith(("ft_layers.", "idx_pred_layer.")) for k in keys):
        return "codeformer"
    if "quantize.embedding.weight" in keys and any(k.startswith("generator.") for k in keys):
        return "vqgan"
    raise ValueError("cannot tell the checkpoint's format from its keys (no quantize/ft_layers/score_embed "
                     "entries): pass --format iqpir|codeformer|vqgan")


def _conv_stack(module: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """(our name, module) of an Encoder/Generator in CodeFormer's flat `blocks` order."""
    blocks = [(f"blocks.{i}", m) for i, m in enumerate(module.blocks)]
    return [("conv_in", module.conv_in), *blocks, ("norm_out", module.norm_out), ("conv_out", module.conv_out)]


def _their_name(name: str) -> str:
    return name.replace("skip.", "conv_out.")  # ResBlock's 1x1 channel change


def _same(t: torch.Tensor) -> torch.Tensor:
    return t


def stage1_entries(model: DualCodebookVQGAN, prefix: str = "", single: bool = False) -> dict[str, Entry]:
    """Source key -> (shape, [(our key, transform)]) for encoder, codebooks and generator."""
    out: dict[str, Entry] = {}
    for part in ("encoder", "generator"):
        for i, (path, mod) in enumerate(_conv_stack(getattr(model, part))):
            for name, t in mod.state_dict().items():
                ours = f"{prefix}{part}.{path}.{name}"
                out[f"{part}.blocks.{i}.{_their_name(name)}"] = (tuple(t.shape), [(ours, _same)])
    shape = tuple(model.quant_c.embedding.weight.shape)
    out["quantize.embedding.weight"] = (shape, [(f"{prefix}quant_c.embedding.weight", _same)]
                                        + ([(f"{prefix}quant_h.embedding.weight", _same)] if single else []))
    if not single:
        out["quantize_aesthetic.embedding.weight"] = (shape, [(f"{prefix}quant_h.embedding.weight", _same)])
    return out


def restorer_entries(model: QualityRestorer, kind: str) -> dict[str, Entry]:
    """Source key -> (shape, targets) for a whole CodeFormer-family restorer. Our keys are
    `stage1.*`, `encoder.*`, `transformer.*`, `fidelity.*` (QualityRestorer's state-dict names)."""
    out = stage1_entries(model.stage1, "stage1.", single=kind == "codeformer")
    for key, (shape, targets) in list(out.items()):
        if key.startswith("encoder."):  # CodeFormer's one encoder is also the restorer's encoder
            out[key] = (shape, targets + [(t.removeprefix("stage1."), f) for t, f in targets])
    tr, cfg = model.transformer, model.cfg
    d, k = cfg.d_model, cfg.codebook_size
    out["position_emb"] = ((cfg.tokens, d), [("transformer.pos", lambda t: t.reshape(1, *t.shape))])
    out["feat_emb.weight"] = ((d, cfg.emb_dim), [("transformer.proj_in.weight", _same)])
    out["feat_emb.bias"] = ((d,), [("transformer.proj_in.bias", _same)])
    if kind == "iqpir":
        shape = tuple(tr.score_map.shape)
        out["score_embed.weight"] = ((shape[0], shape[1] * shape[2] * shape[3]),
                                     [("transformer.score_map", lambda t: t.reshape(shape))])
    for layer in range(cfg.n_layers):
        src, dst = f"ft_layers.{layer}.", f"transformer.blocks.{layer}."
        out[src + "self_attn.in_proj_weight"] = ((3 * d, d), [(dst + "qk.weight", lambda t: t[:2 * d]),
                                                               (dst + "v.weight", lambda t: t[2 * d:])])
        out[src + "self_attn.in_proj_bias"] = ((3 * d,), [(dst + "qk.bias", lambda t: t[:2 * d]),
                                                           (dst + "v.bias", lambda t: t[2 * d:])])
        pairs = {"self_attn.out_proj": "proj", "linear1": "ffn.0", "linear2": "ffn.3", "norm1": "norm1", "norm2": "norm2"}
        for theirs, ours in pairs.items():
            for p in ("weight", "bias"):
                out[f"{src}{theirs}.{p}"] = (tuple(tr.state_dict()[f"blocks.{layer}.{ours}.{p}"].shape),
                                             [(f"{dst}{ours}.{p}", _same)])
    out["idx_pred_layer.0.weight"] = ((d,), [("transformer.norm_out.weight", _same)])
    out["idx_pred_layer.0.bias"] = ((d,), [("transformer.norm_out.bias", _same)])
    if kind == "iqpir":  # interleaved: row 2n + j is code n of book j (0 = HQ+, 1 = common)
        out["idx_pred_layer.1.weight"] = ((2 * k, d), [("transformer.head_h.weight", lambda t: t[0::2]),
                                                       ("transformer.head_c.weight", lambda t: t[1::2])])
    else:
        out["idx_pred_layer.1.weight"] = ((k, d), [("transformer.head_c.weight", _same)])
    for name, t in model.fidelity.state_dict().items():
        r, rest = name.removeprefix("blocks.").split(".", 1)
        out[f"fuse_convs_dict.{r}.{_their_name(rest)}"] = (tuple(t.shape), [(f"fidelity.{name}", _same)])
    return out


def map_state(source: dict[str, torch.Tensor], entries: dict[str, Entry], origin: str) -> tuple[dict, dict]:
    """Apply `entries` to `source`; refuse missing, unexpected or mis-shaped tensors, naming them.
    Returns (our state {key: tensor}, mapping {our key: source key})."""
    missing = sorted(set(entries) - set(source))
    extra = sorted(set(source) - set(entries))
    wrong = sorted(f"{k} {tuple(source[k].shape)} (expected {entries[k][0]})"
                   for k in set(source) & set(entries) if tuple(source[k].shape) != entries[k][0])
    problems = []
    for what, keys in (("missing", missing), ("unexpected", extra), ("mis-shaped", wrong)):
        if keys:
            problems.append(f"{len(keys)} {what}: " + ", ".join(keys[:8]) + (" ..." if len(keys) > 8 else ""))
    if problems:
        raise ValueError(f"{origin} does not fit the architecture: " + "; ".join(problems))
    state, mapping = {}, {}
    for key, (_, targets) in entries.items():
        for ours, transform in targets:
            state[ours] = transform(source[key].float()).contiguous().clone()
            mapping[ours] = key
    return state, mapping


def restorer_configs(kind: str, hq_weight: float) -> tuple[VQGANConfig, TransformerConfig]:
    """The paper-size configs of a CodeFormer-family restorer (VQGANConfig's defaults are the paper's)."""
    vq = VQGANConfig(hq_weight=hq_weight if kind == "iqpir" else 0.0)
    tc = TransformerConfig(latent_size=vq.latent_size, emb_dim=vq.emb_dim, codebook_size=vq.codebook_size,
                           n_layers=9, n_heads=8, d_model=512, d_ff=1024,
                           conditioning="add" if kind == "iqpir" else "none",
                           codebooks="dual" if kind == "iqpir" else "common", fidelity_resolutions=CONNECT)
    return vq, tc


def import_weights(path: str | Path, out: str | Path, fmt: str | None = None,
                   hq_weight: float = AUTHORS_HQ_WEIGHT) -> dict:
    """Read a released checkpoint and write an iqpfr bundle (iqpir, codeformer) or a stage-I
    checkpoint (vqgan). Returns the provenance recorded in the written file."""
    from .restore import BUNDLE_FORMAT
    from .train import STAGE1_FORMAT

    path = Path(path)
    source, which = read_state(path)
    kind = fmt or detect_format(source)
    if kind not in FORMATS:
        raise ValueError(f"--format must be one of {FORMATS}, got {kind!r}")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    vq_cfg, tr_cfg = restorer_configs(kind, hq_weight)
    if kind == "vqgan":
        vq_cfg = VQGANConfig()  # the paper's; init_from ignores lambda and beta (training settings, not weights)
        model = DualCodebookVQGAN(vq_cfg)
        state, mapping = map_state(source, stage1_entries(model, single=True), f"{path} ({which}, format vqgan)")
        model.load_state_dict(state, strict=True)
        provenance = _provenance(path, sha, kind, which, mapping, {"quant_h.embedding.weight": "copy of quantize (no HQ+ book in the source)"})
        ckpt = {"format": STAGE1_FORMAT, "config": asdict(vq_cfg), "train_config": None, "step": 0,
                "model": model.state_dict(), "ema_generator": model.generator.state_dict(), "imported": provenance}
        atomic.save_torch(ckpt, out)
        return provenance
    model = QualityRestorer(DualCodebookVQGAN(vq_cfg), tr_cfg)
    state, mapping = map_state(source, restorer_entries(model, kind), f"{path} ({which}, format {kind})")
    filled = {}
    if kind == "codeformer":
        state["transformer.head_h.weight"] = torch.zeros_like(model.transformer.head_h.weight)
        filled = {"stage1.quant_h.embedding.weight": "copy of quantize (no HQ+ book; never read: codebooks common)",
                  "transformer.head_h.weight": "zeros (no HQ+ head; never read: codebooks common)"}
    model.load_state_dict(state, strict=True)
    model.eval()
    provenance = _provenance(path, sha, kind, which, mapping, filled)
    provenance["hq_weight"] = model.hq_weight
    from .restore import restorer_state

    bundle = {"format": BUNDLE_FORMAT, "config": asdict(tr_cfg), "stage1_config": asdict(vq_cfg),
              "stage1": model.stage1.state_dict(), "restorer": restorer_state(model), "provenance": provenance}
    bundle["tensor_sha256"] = safeload.tensor_digest(bundle)
    atomic.save_torch(bundle, out)
    return provenance


def _provenance(path: Path, sha: str, kind: str, which: str, mapping: dict, filled: dict) -> dict:
    return {"imported_from": path.name, "source_sha256": sha, "source_format": kind, "source_weights": which,
            "mapping": mapping, "filled": filled}
