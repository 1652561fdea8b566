"""An independent, functional description of the CodeFormer-family architecture, for the import tests.

Written from what the original architecture files say (sczhou/CodeFormer and the IQPFR authors'
fengyang1399-pixel/IQPIR, `basicsr/archs/{vqgan,codeformer}_arch.py`), not from iqpfr's modules:
- `layout` lists their flat `blocks` in order and `state_dict_spec` the key names and shapes;
- `random_state` fills them with seeded random values;
- `forward` runs the restorer straight on such a state dict with torch.nn.functional (and
  nn.MultiheadAttention, which the original uses).
The constants below (block indices of the fusion taps, channel table, connect list) are copied as
facts from the original files.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NF, CH_MULT, RES_BLOCKS, RESOLUTION, ATTN, EMB, K = 64, (1, 2, 2, 4, 4, 8), 2, 512, (16,), 256, 1024
D_MODEL, N_HEAD, N_LAYERS, D_MLP, TOKENS = 512, 8, 9, 1024, 256
CONNECT = ("32", "64", "128", "256")
CHANNELS = {"16": 512, "32": 256, "64": 256, "128": 128, "256": 128, "512": 64}
FUSE_ENCODER_BLOCK = {"512": 2, "256": 5, "128": 8, "64": 11, "32": 14, "16": 18}
FUSE_GENERATOR_BLOCK = {"16": 6, "32": 9, "64": 12, "128": 15, "256": 18, "512": 21}


def layout(part: str) -> list[tuple]:
    """The flat block list of CodeFormer's Encoder / Generator: (kind, channels...)."""
    blocks: list[tuple] = []
    if part == "encoder":
        blocks.append(("conv", 3, NF))
        res, cin = RESOLUTION, NF
        for i, m in enumerate(CH_MULT):
            for _ in range(RES_BLOCKS):
                blocks.append(("res", cin, NF * m))
                cin = NF * m
                if res in ATTN:
                    blocks.append(("attn", cin))
            if i != len(CH_MULT) - 1:
                blocks.append(("down", cin))
                res //= 2
        blocks += [("res", cin, cin), ("attn", cin), ("res", cin, cin), ("norm", cin), ("conv", cin, EMB)]
    else:
        cin = NF * CH_MULT[-1]
        res = RESOLUTION // 2 ** (len(CH_MULT) - 1)
        blocks += [("conv", EMB, cin), ("res", cin, cin), ("attn", cin), ("res", cin, cin)]
        for i in reversed(range(len(CH_MULT))):
            for _ in range(RES_BLOCKS):
                blocks.append(("res", cin, NF * CH_MULT[i]))
                cin = NF * CH_MULT[i]
                if res in ATTN:
                    blocks.append(("attn", cin))
            if i != 0:
                blocks.append(("up", cin))
                res *= 2
        blocks += [("norm", cin), ("conv", cin, 3)]
    return blocks


def _block_spec(prefix: str, block: tuple) -> dict[str, tuple]:
    kind, c = block[0], block[1]
    if kind == "conv":
        return {prefix + "weight": (block[2], c, 3, 3), prefix + "bias": (block[2],)}
    if kind == "norm":
        return {prefix + "weight": (c,), prefix + "bias": (c,)}
    if kind in ("down", "up"):
        return {prefix + "conv.weight": (c, c, 3, 3), prefix + "conv.bias": (c,)}
    if kind == "attn":
        spec = {prefix + "norm.weight": (c,), prefix + "norm.bias": (c,)}
        for n in ("q", "k", "v", "proj_out"):
            spec.update({f"{prefix}{n}.weight": (c, c, 1, 1), f"{prefix}{n}.bias": (c,)})
        return spec
    cout = block[2]  # res
    spec = {prefix + "norm1.weight": (c,), prefix + "norm1.bias": (c,), prefix + "conv1.weight": (cout, c, 3, 3),
            prefix + "conv1.bias": (cout,), prefix + "norm2.weight": (cout,), prefix + "norm2.bias": (cout,),
            prefix + "conv2.weight": (cout, cout, 3, 3), prefix + "conv2.bias": (cout,)}
    if c != cout:
        spec.update({prefix + "conv_out.weight": (cout, c, 1, 1), prefix + "conv_out.bias": (cout,)})
    return spec


def state_dict_spec(kind: str) -> dict[str, tuple]:
    """Key -> shape of a released checkpoint's params: kind iqpir | codeformer | vqgan."""
    spec: dict[str, tuple] = {}
    for part in ("encoder", "generator"):
        for i, block in enumerate(layout(part)):
            spec.update(_block_spec(f"{part}.blocks.{i}.", block))
    spec["quantize.embedding.weight"] = (K, EMB)
    if kind == "vqgan":
        return spec
    if kind == "iqpir":
        spec["quantize_aesthetic.embedding.weight"] = (K, EMB)
        spec["score_embed.weight"] = (10, 16 * 16 * EMB)
    spec["position_emb"] = (TOKENS, D_MODEL)
    spec["feat_emb.weight"], spec["feat_emb.bias"] = (D_MODEL, EMB), (D_MODEL,)
    for layer in range(N_LAYERS):
        p = f"ft_layers.{layer}."
        spec.update({p + "self_attn.in_proj_weight": (3 * D_MODEL, D_MODEL), p + "self_attn.in_proj_bias": (3 * D_MODEL,),
                     p + "self_attn.out_proj.weight": (D_MODEL, D_MODEL), p + "self_attn.out_proj.bias": (D_MODEL,),
                     p + "linear1.weight": (D_MLP, D_MODEL), p + "linear1.bias": (D_MLP,),
                     p + "linear2.weight": (D_MODEL, D_MLP), p + "linear2.bias": (D_MODEL,),
                     p + "norm1.weight": (D_MODEL,), p + "norm1.bias": (D_MODEL,),
                     p + "norm2.weight": (D_MODEL,), p + "norm2.bias": (D_MODEL,)})
    spec["idx_pred_layer.0.weight"], spec["idx_pred_layer.0.bias"] = (D_MODEL,), (D_MODEL,)
    spec["idx_pred_layer.1.weight"] = (2 * K if kind == "iqpir" else K, D_MODEL)
    for size in CONNECT:
        c, p = CHANNELS[size], f"fuse_convs_dict.{size}."
        spec.update(_block_spec(p + "encode_enc.", ("res", 2 * c, c)))
        for branch in ("scale", "shift"):
            for j in (0, 2):
                spec.update({f"{p}{branch}.{j}.weight": (c, c, 3, 3), f"{p}{branch}.{j}.bias": (c,)})
    return spec


def random_state(kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random values of sensible scale for every key of `state_dict_spec(kind)`."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in state_dict_spec(kind).items():
        if len(shape) == 1:
            t = (1.0 if key.endswith("weight") and "norm" in key else 0.0) + 0.1 * torch.randn(shape, generator=g)
        elif key.endswith("embedding.weight"):
            t = torch.randn(shape, generator=g)
        elif key in ("position_emb", "score_embed.weight"):
            t = 0.5 * torch.randn(shape, generator=g)
        else:
            fan_in = int(torch.tensor(shape[1:]).prod())
            t = torch.randn(shape, generator=g) / fan_in ** 0.5
        out[key] = t
    return out


# -- the forward pass, straight on a state dict --------------------------------------------------

def _conv(sd, p, h, stride=1, pad=1):
    return F.conv2d(h, sd[p + "weight"], sd[p + "bias"], stride, pad)


def _gn(sd, p, h):
    return F.group_norm(h, 32, sd[p + "weight"], sd[p + "bias"], 1e-6)


def _swish(h):
    return h * torch.sigmoid(h)


def _res(sd, p, h):
    t = _conv(sd, p + "conv1.", _swish(_gn(sd, p + "norm1.", h)))
    t = _conv(sd, p + "conv2.", _swish(_gn(sd, p + "norm2.", t)))
    skip = _conv(sd, p + "conv_out.", h, pad=0) if p + "conv_out.weight" in sd else h
    return t + skip


def _attn(sd, p, h):
    hn = _gn(sd, p + "norm.", h)
    q, k, v = (_conv(sd, p + n + ".", hn, pad=0) for n in ("q", "k", "v"))
    b, c, hh, ww = q.shape
    w_ = torch.softmax(torch.bmm(q.reshape(b, c, hh * ww).permute(0, 2, 1), k.reshape(b, c, hh * ww)) * c ** -0.5, dim=2)
    out = torch.bmm(v.reshape(b, c, hh * ww), w_.permute(0, 2, 1)).reshape(b, c, hh, ww)
    return h + _conv(sd, p + "proj_out.", out, pad=0)


def _block(sd, p, h, part):
    if p + "norm1.weight" in sd:
        return _res(sd, p, h)
    if p + "q.weight" in sd:
        return _attn(sd, p, h)
    if p + "conv.weight" in sd:
        if part == "encoder":  # Downsample: pad one zero row/col at the bottom/right, 3x3 stride 2, no padding
            return _conv(sd, p + "conv.", F.pad(h, (0, 1, 0, 1)), stride=2, pad=0)
        return _conv(sd, p + "conv.", F.interpolate(h, scale_factor=2.0, mode="nearest"))
    if sd[p + "weight"].dim() == 1:
        return _gn(sd, p, h)
    return _conv(sd, p, h)


def _adain(content, style, eps=1e-5):
    def mean_std(f):
        b, c = f.shape[:2]
        var = f.view(b, c, -1).var(dim=2) + eps
        return f.view(b, c, -1).mean(dim=2).view(b, c, 1, 1), var.sqrt().view(b, c, 1, 1)

    (sm, ss), (cm, cs) = mean_std(style), mean_std(content)
    return (content - cm) / cs * ss + sm


def _sft(sd, p, enc, dec, w):
    h = _res(sd, p + "encode_enc.", torch.cat([enc, dec], 1))
    scale = _conv(sd, p + "scale.2.", F.leaky_relu(_conv(sd, p + "scale.0.", h), 0.2))
    shift = _conv(sd, p + "shift.2.", F.leaky_relu(_conv(sd, p + "shift.0.", h), 0.2))
    return dec + w * (dec * scale + shift)


@torch.no_grad()
def forward(sd: dict, x: torch.Tensor, kind: str, score: float | None = None, w: float = 0.0, adain: bool = True,
            aesthetic_weight: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, 3, 512, 512) in [-1, 1] -> (output (B, 3, 512, 512) about [-1, 1], code indices (B, 256, n_books))."""
    enc_feat = {}
    taps = {FUSE_ENCODER_BLOCK[s]: s for s in CONNECT}
    h = x
    for i in range(len(layout("encoder"))):
        h = _block(sd, f"encoder.blocks.{i}.", h, "encoder")
        if i in taps:
            enc_feat[taps[i]] = h.clone()
    lq_feat = h
    if kind == "iqpir":
        s = int(torch.floor(torch.tensor(score) * 10))  # the bin: floor(10 S), S in [0, 1)
        lq_feat = lq_feat + sd["score_embed.weight"][s].reshape(1, *lq_feat.shape[1:])
    b = x.shape[0]
    pos = sd["position_emb"].unsqueeze(1).repeat(1, b, 1)  # (T, B, d)
    q = F.linear(lq_feat.flatten(2).permute(2, 0, 1), sd["feat_emb.weight"], sd["feat_emb.bias"])
    mha = torch.nn.MultiheadAttention(D_MODEL, N_HEAD)
    for layer in range(N_LAYERS):
        p = f"ft_layers.{layer}."
        mha.load_state_dict({k.removeprefix(p + "self_attn."): v for k, v in sd.items() if k.startswith(p + "self_attn.")})
        t2 = F.layer_norm(q, (D_MODEL,), sd[p + "norm1.weight"], sd[p + "norm1.bias"])
        qk = t2 + pos
        q = q + mha(qk, qk, value=t2)[0]
        t2 = F.layer_norm(q, (D_MODEL,), sd[p + "norm2.weight"], sd[p + "norm2.bias"])
        q = q + F.linear(F.gelu(F.linear(t2, sd[p + "linear1.weight"], sd[p + "linear1.bias"])),
                         sd[p + "linear2.weight"], sd[p + "linear2.bias"])
    logits = F.linear(F.layer_norm(q, (D_MODEL,), sd["idx_pred_layer.0.weight"], sd["idx_pred_layer.0.bias"]),
                      sd["idx_pred_layer.1.weight"])  # (T, B, N)
    shape = (b, 16, 16, EMB)
    if kind == "iqpir":
        idx = logits.reshape(logits.shape[0], logits.shape[1], -1, 2).permute(1, 0, 2, 3).argmax(2)  # (B, T, 2)
        quant = (aesthetic_weight * sd["quantize_aesthetic.embedding.weight"][idx[..., 0]]
                 + sd["quantize.embedding.weight"][idx[..., 1]])
    else:
        idx = logits.permute(1, 0, 2).argmax(2)[..., None]  # (B, T, 1)
        quant = sd["quantize.embedding.weight"][idx[..., 0]]
    quant = quant.view(shape).permute(0, 3, 1, 2)
    quant = lq_feat + (quant - lq_feat)  # the original's straight-through line, kept for its rounding
    if adain:
        quant = _adain(quant, lq_feat)
    gen_taps = {FUSE_GENERATOR_BLOCK[s]: s for s in CONNECT}
    h = quant
    for i in range(len(layout("generator"))):
        h = _block(sd, f"generator.blocks.{i}.", h, "generator")
        if i in gen_taps and w > 0:
            size = gen_taps[i]
            h = _sft(sd, f"fuse_convs_dict.{size}.", enc_feat[size], h, w)
    return h, idx
