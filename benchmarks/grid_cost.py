"""What a finer token grid costs a training step, part by part (random weights, CPU, batch 16).

For the default profile's stage-I architecture on 16 x 16 tokens (f = 4) and on 32 x 32 tokens
(f = 2, with and without attention at 32 x 32), the seconds of one forward + backward pass of:
the encoder (stage II trains it), the generator (the quality loss back-propagates through it) and
the code Transformer of the default profile's size at that grid, attending over every token
(patch 1) or over 2 x 2 patches of tokens (patch 2). A stage-II step at f = 2 with patch 1 took
3.46 s against about 0.8 at f = 4 (reports/experiments/f2): this says where the difference goes.

    python benchmarks/grid_cost.py            # about a minute on 2 cores
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import codebook
from iqpfr.conditioned import transformer_config
from iqpfr.config import load_params
from iqpfr.transformer import CodeTransformer
from iqpfr.vqgan import DualCodebookVQGAN

F4 = {"ch_mult": (1, 2, 4), "attn_resolutions": (16,)}
GRIDS = {  # name: (vqgan overrides, transformer overrides)
    "f = 4": (F4, {"patch": 1}),
    "f = 2": ({"ch_mult": (1, 2), "attn_resolutions": (32,)}, {"patch": 1}),
    "f = 2, no attention": ({"ch_mult": (1, 2), "attn_resolutions": ()}, {"patch": 1}),
    "f = 2, patch 2": ({"ch_mult": (1, 2), "attn_resolutions": (32,)}, {"patch": 2}),
    "f = 2, no attention, patch 2": ({"ch_mult": (1, 2), "attn_resolutions": ()}, {"patch": 2}),
}


def seconds(fn, repeats: int) -> float:
    """Mean seconds of fn() over `repeats` calls after one warm-up call."""
    fn()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def costs(params, over: tuple[dict, dict], batch: int, repeats: int) -> dict:
    """Forward + backward seconds of the encoder, the generator and the Transformer for the
    profile's stage I and Transformer with `over` (vqgan, transformer overrides) applied, on a batch
    of random (batch, 3, R, R) images."""
    torch.manual_seed(0)
    vqgan = replace(params.vqgan, **over[0])
    model = DualCodebookVQGAN(codebook.vqgan_config(params.data, vqgan))
    net = CodeTransformer(transformer_config(params.data, vqgan, replace(params.transformer, **over[1])))
    x = torch.rand(batch, 3, model.cfg.resolution, model.cfg.resolution) * 2 - 1
    z = model.encoder(x).detach()  # (B, D, r, r)
    bins = torch.randint(0, 10, (batch,))

    def encoder():
        model.encoder(x).square().mean().backward()

    def generator():
        model.decode(z.clone().requires_grad_(True)).square().mean().backward()

    def transformer():
        logits = net(z, bins)
        sum(t.logsumexp(1).mean() for t in (logits if isinstance(logits, tuple) else (logits,))).backward()

    return {"tokens": model.cfg.latent_size ** 2, "positions": net.cfg.positions, "encoder_s": round(seconds(encoder, repeats), 3),
            "generator_s": round(seconds(generator, repeats), 3), "transformer_s": round(seconds(transformer, repeats), 3)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default=str(ROOT / "profiles" / "default.yaml"))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    params = load_params(args.params)
    out = {name: costs(params, over, args.batch, args.repeats) for name, over in GRIDS.items()}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
