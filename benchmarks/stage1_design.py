"""Why the default stage I looks the way it does: held-out reconstruction against training steps
for a few stage-I designs, measured on the synthetic world (run `dvc repro world` first).

Each design trains from the same seed on `data/world/train` (batch 16 unless the design says
otherwise, L1 + the params' perceptual term + VQ, the gate closed so that the common codebook is
measured alone, the cosine schedule of the real run's length in training images, no GAN: the GAN
only starts late in the real run; the "default + ..." designs put the pipeline's gate and GAN back
one at a time, and the batch-8 design halves the batch at the same number of training images) and is
evaluated every `--every` batch-16 steps' worth of images on the held-out GTs: PSNR (RGB, 8-bit grid)
of the common-codebook (lambda = 0) reconstruction, the fraction of codes of C used on the held-out
set, Spearman(GT's true quality, its reconstruction's) as the pipeline's
`spearman_true_quality_gt_vs_recon`, the mean true quality of the held-out GTs' pristine faces
reconstructed the same way (stage I's ceiling: benchmarks/stage1_ceiling.py), and the seconds per
step (wall clock; meaningful only on an otherwise idle machine). `--steps` and `--every` count
steps of batch 16; a design with batch b runs 16 / b times as many steps. Rows record the design's
own step, its batch and the training images seen. Results go to reports/metrics/stage1_design.csv
(a design's rows replace its earlier ones), which notebook 02 plots.

    python benchmarks/stage1_design.py --steps 300   # every design (3-4 min each on 2 idle cores)
    python benchmarks/stage1_design.py --steps 100 --designs f4_512_encoder
    # the pipeline's recipe over its 1000 steps: C alone, + the HQ+ gate, + the GAN (notebook 02)
    python benchmarks/stage1_design.py --steps 1000 --designs "f4_512_encoder_init_restart (default)" \
        "default + HQ+ gate" --out reports/metrics/stage1_long.csv
    # the same number of training images in batches of 8 (2000 steps)
    python benchmarks/stage1_design.py --steps 1000 --every 125 --designs "default + HQ+ gate, batch 8" \
        --out reports/metrics/stage1_long.csv
    python benchmarks/stage1_design.py --steps 300 --designs f4_512_uniform --seeds 0 1 2   # seed spread
    # does stage I keep the GTs' quality? The recipe over the run's 1400 steps, and the experimental
    # spectrum term, weight 1 over 1400 and weight 4 over 300 (notebook 02 plots this file: a
    # dependency of the train_codebook stage)
    python benchmarks/stage1_design.py --steps 1400 --designs "default + HQ+ gate" --out reports/metrics/stage1_keeps.csv
    python benchmarks/stage1_design.py --steps 1400 --designs "default + HQ+ gate + spectral 1" \
        --out reports/metrics/stage1_keeps.csv
    python benchmarks/stage1_design.py --steps 300 --designs "default + HQ+ gate + spectral 4" \
        --out reports/metrics/stage1_keeps.csv
    # the recipe's seed spread (a file of its own: notebook 02 draws one curve per design)
    python benchmarks/stage1_design.py --steps 1400 --designs "default + HQ+ gate" --seeds 1 \
        --out reports/metrics/stage1_seeds.csv
    # the recipe in fp32 and under bf16 autocast, same seed and batches (precision's curve check)
    python benchmarks/stage1_design.py --steps 500 --designs "default + HQ+ gate" \
        "default + HQ+ gate, bf16" --out reports/metrics/stage1_precision.csv
    python benchmarks/stage1_design.py --steps 500 --designs "default + HQ+ gate, bf16, GroupNorm fp32" \
        --out reports/metrics/stage1_precision.csv
    # the recipe on 32 x 32 tokens (f = 2) over its first 700 steps
    python benchmarks/stage1_design.py --steps 700 --designs "default + HQ+ gate, f = 2" \
        --out reports/metrics/stage1_grid.csv

A design's full name given to --designs selects that design; another name selects every design
that starts with it. Rows carry the stage-I seed; a (design, seed) pair's rows replace its earlier
ones in the file.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stage1_ceiling import reconstruct_common
from benchmarks.suite import groupnorm_in_fp32
from iqpfr import codebook, data, evaluate, provenance  # noqa: E402
from iqpfr.config import load_params  # noqa: E402
from iqpfr.iqanet import spearman  # noqa: E402
from iqpfr.losses import LUMA  # noqa: E402
from iqpfr.pipeline import WORLD, _load_stack  # noqa: E402
from iqpfr.task import FACE  # noqa: E402
from iqpfr.train import Stage1Trainer, make_perceptual  # noqa: E402

OUT = ROOT / "reports/metrics/stage1_design.csv"

REF_BATCH = 16  # the default profile's batch; --steps counts its steps
B16 = dict(batch_size=REF_BATCH, restart_every=50)  # dead codes restarted every 800 training images

# The 16 x 16 grid (f = 4) the default profile had until it took 32 x 32 tokens (f = 2, no stage-I
# attention): every design measured on it names it, so that a rerun measures what its rows measured
F4 = {"ch_mult": (1, 2, 4), "attn_resolutions": (16,)}

# name -> (vqgan overrides, stage-I settings overrides)
DESIGNS = {
    "f8_256_uniform (landed before)": (dict(ch_mult=(1, 2, 2, 4), attn_resolutions=(8,), codebook_size=256),
                                       dict(B16, codebook_init="uniform", restart_every=0, codebook_lr_mult=20.0,
                                            perceptual_weight=0.5)),
    "f4_512_uniform": (F4, dict(B16, codebook_init="uniform", restart_every=0, codebook_lr_mult=20.0)),
    "f4_512_encoder_init_restart (default)": (F4, B16),
    "f4_512_encoder_init_restart ssim0.5": (F4, dict(B16, perceptual_weight=0.5)),
    # the pipeline's own recipe, one ingredient at a time: H trained on the gated GTs, then the GAN
    "default + HQ+ gate": (F4, dict(B16, gate_from="stage1")),
    "default + HQ+ gate + GAN": (F4, dict(B16, gate_from="stage1", gan_start=800)),  # the recipe until the GAN was dropped
    # twice the updates for the same images, in about the same time (measured: worse than batch 16)
    "default + HQ+ gate, batch 8": (F4, dict(gate_from="stage1", batch_size=8, restart_every=100)),
    # experiments for the restoration issue's "stage I keeps the GTs' quality": the perceptual term
    # plus a patch amplitude-spectrum term (`SpectralSSIM` below), so that the decoder is asked for
    # a noisy GT's high-frequency energy without having to store its noise
    "default + HQ+ gate + spectral 1": (F4, dict(B16, gate_from="stage1", spectral=1.0)),
    "default + HQ+ gate + spectral 4": (F4, dict(B16, gate_from="stage1", spectral=4.0)),
    # the pipeline's recipe on a finer token grid: f = 2, 32 x 32 tokens of 2 x 2 pixels (attention
    # at 32 x 32 in place of 16 x 16), for "stage I keeps the GTs' quality"
    "default + HQ+ gate, f = 2": ({"ch_mult": (1, 2), "attn_resolutions": (32,)}, dict(B16, gate_from="stage1")),
    # ... without attention in stage I (attention over 1024 positions costs the f = 2 encoder half its
    # time): the default profile's stage I
    "default + HQ+ gate, f = 2, no attention": ({"ch_mult": (1, 2), "attn_resolutions": ()}, dict(B16, gate_from="stage1")),
    # the pipeline's recipe under bf16 autocast (quantisation and losses stay fp32, as in the
    # trainer): does the curve follow fp32's where bf16 pays (AVX512-bf16 on the AMD EPYC)?
    "default + HQ+ gate, bf16": (F4, dict(B16, gate_from="stage1", precision="bf16")),
    # ... with every GroupNorm in fp32 (benchmarks.suite.groupnorm_in_fp32: bf16 GroupNorm's
    # backward is slow on a CPU), a design measurement for the package's layers
    "default + HQ+ gate, bf16, GroupNorm fp32": (F4, dict(B16, gate_from="stage1", precision="bf16", groupnorm_fp32=True)),
}


class SpectralSSIM(torch.nn.Module):
    """Experimental perceptual term (benchmark only, not in the pipeline): the params' term plus
    `weight` x the mean L1 distance between the amplitude spectra of `patch` x `patch` luma tiles
    (x, y: (B, 3, R, R) in [0,1], R a multiple of `patch`; each tile's DFT divided by its pixel
    count, the mean distance multiplied by `patch`). The amplitude ignores phase: a decoder can
    match a noisy tile's energy with noise of its own."""

    def __init__(self, base: torch.nn.Module | None, weight: float, patch: int = 8):
        super().__init__()
        self.base, self.weight, self.patch = base, weight, patch

    def amplitude(self, x: torch.Tensor) -> torch.Tensor:
        luma = (x * torch.tensor(LUMA, device=x.device).view(1, 3, 1, 1)).sum(1)  # (B, R, R)
        p = self.patch
        tiles = luma.unfold(1, p, p).unfold(2, p, p)  # (B, R/p, R/p, p, p)
        return torch.fft.rfft2(tiles, norm="forward").abs()  # (B, R/p, R/p, p, p/2 + 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        base = self.base(x, y) if self.base is not None else x.new_zeros(())
        return base + self.weight * (self.amplitude(x.float()) - self.amplitude(y.float())).abs().mean() * self.patch


@torch.no_grad()
def holdout_figures(model, x: torch.Tensor, oracle: torch.Tensor) -> dict:
    """Figures of the lambda = 0 reconstruction of the held-out GTs x (N, 3, R, R) in [0,1]: mean
    PSNR to x, C's code use, and Spearman(GT's true quality, reconstruction's) against the GTs'
    pristine renders `oracle` (the pipeline's `spearman_true_quality_gt_vs_recon`)."""
    model.eval()
    z = model.encode(x * 2 - 1)
    idx = model.quant_c.nearest(z)
    rec = ((model.decode(model.quant_c.lookup(idx)) + 1) / 2).clamp(0, 1)
    ceiling = FACE.true_quality(reconstruct_common(model, oracle), oracle)  # each pristine face through stage I
    model.train()
    psnr = np.mean([evaluate.psnr(r.permute(1, 2, 0).numpy(), g.permute(1, 2, 0).numpy()) for r, g in zip(rec, x)])
    keeps = spearman(FACE.true_quality(x, oracle), FACE.true_quality(rec, oracle))
    return {"psnr_holdout_lambda0": round(float(psnr), 3),
            "used_c_holdout": round(float((torch.bincount(idx.flatten(), minlength=model.cfg.codebook_size) > 0).float().mean()), 4),
            "spearman_true_quality_lambda0": round(float(keeps), 4),
            "ceiling_true_quality": round(float(np.mean(ceiling)), 4)}


def run(name: str, steps: int, every: int, params_path, seed: int | None = None) -> list[dict]:
    """Train one design for `steps` steps and return its held-out figures every `every` steps
    (`params_path`: a params file or already loaded Params; `seed`: stage1.seed unless given)."""
    p = load_params(params_path) if isinstance(params_path, str) else params_path
    vq_over, s_over = DESIGNS[name]
    s_over = dict(s_over)
    perceptual = s_over.pop("perceptual", p.stage1.perceptual)
    spectral = s_over.pop("spectral", 0.0)  # weight of SpectralSSIM's spectrum term; 0: the params' term
    gate_from = s_over.pop("gate_from", None)  # "stage1": the pipeline's gates (stage1.gate); else closed
    groupnorm_fp32 = s_over.pop("groupnorm_fp32", False)  # benchmarks.suite.groupnorm_in_fp32 around training
    per = REF_BATCH // s_over["batch_size"]  # the design's steps per batch-16 step
    gan_start = s_over.pop("gan_start", 10**9 // per) * per  # the (batch-16) step the design's GAN starts at; default: none
    cfg = replace(codebook.vqgan_config(p.data, p.vqgan), **vq_over)
    # the schedule runs over the real run's length in training images, so that the first `steps`
    # steps' images are what the pipeline's run goes through
    run_images = p.stage1.steps * p.stage1.batch_size
    settings = replace(codebook.stage1_settings(p.stage1), steps=max(steps * per, run_images // s_over["batch_size"]),
                       gan_start=gan_start, **s_over)
    steps, every = steps * per, every * per
    if seed is not None:
        settings = replace(settings, seed=seed)
    images = data.ManifestDataset(WORLD / "train")
    holdout, _ = _load_stack(WORLD / "holdout")
    oracle, _ = _load_stack(WORLD / "holdout", "oracle_file")
    gates = codebook.stage1_gates(p.stage1, len(images)) if gate_from == "stage1" else torch.zeros(len(images))
    term = make_perceptual(perceptual, "cpu")
    trainer = Stage1Trainer(cfg, settings, images, gates, SpectralSSIM(term, spectral) if spectral else term)
    rows, t_sum = [], 0.0
    with groupnorm_in_fp32() if groupnorm_fp32 else contextlib.nullcontext():
        while trainer.step < steps:
            t0 = time.perf_counter()
            trainer.train_step()
            t_sum += time.perf_counter() - t0
            if trainer.step % every == 0:
                rows.append({"design": name, "seed": settings.seed, "step": trainer.step, "batch": settings.batch_size,
                             "images": trainer.step * settings.batch_size, **holdout_figures(trainer.model, holdout, oracle),
                             "precision": settings.precision,
                             "tokens": cfg.latent_size ** 2, "codebook_size": cfg.codebook_size,
                             "seconds_per_step": round(t_sum / trainer.step, 3)})
                print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300, help="steps of batch 16 (a batch-8 design runs twice as many)")
    ap.add_argument("--every", type=int, default=100, help="evaluate every this many batch-16 steps' worth of images")
    ap.add_argument("--designs", nargs="*", default=list(DESIGNS), help="names from DESIGNS (a prefix is enough)")
    ap.add_argument("--seeds", type=int, nargs="*", default=None, help="stage-I seeds (default: stage1.seed)")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(OUT), help="CSV to write (default: the one notebook 02 plots, a "
                    "dependency of the train_codebook stage; use another file for longer curves)")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(2)
    # a design's full name selects it alone; otherwise a name selects every design it starts
    names = [n for want in args.designs for n in ([want] if want in DESIGNS else [d for d in DESIGNS if d.startswith(want)])]
    params = load_params(args.params)  # read once: every design runs on the same settings
    try:
        provenance.require_world(out, params.data)  # rows of one world per file
    except ValueError as err:
        sys.exit(str(err))
    out.parent.mkdir(parents=True, exist_ok=True)
    for name in names:  # each (design, seed)'s rows replace its earlier ones, the others are kept
        for seed in args.seeds or [params.stage1.seed]:
            rows = pd.DataFrame(run(name, args.steps, args.every, params, seed))
            old = pd.read_csv(out) if out.exists() else pd.DataFrame(columns=rows.columns)
            if "seed" not in old:  # files written before seeds were recorded: those ran stage1.seed
                old.insert(1, "seed", params.stage1.seed)
            if "batch" not in old:  # files written before batches were recorded: every design ran batch 16
                old.insert(3, "batch", REF_BATCH)
                old.insert(4, "images", old["step"] * REF_BATCH)
            keep = (old["design"] != name) | (old["seed"] != seed)
            merged = pd.concat([old[keep], rows], ignore_index=True)
            merged["order"] = merged["design"].map({n: i for i, n in enumerate(DESIGNS)})
            merged.sort_values(["order", "seed", "step"]).drop(columns="order").to_csv(out, index=False)
            provenance.write(out, params.data, provenance.sections_of(params),
                             provenance.command("benchmarks/stage1_design.py", None), merged=True)
            print(f"wrote {out} ({name}, seed {seed})")


if __name__ == "__main__":
    main()
