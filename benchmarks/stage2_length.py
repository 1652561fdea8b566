"""How the main model's restoration grows with stage-II length: the curve behind "restoration better
than the input" when the pipeline's run falls short of it.

Trains the params' main model (stage II of `train_conditioned`, same seed, batches and LQ, so its
first `stage2.steps` steps are the pipeline's) for `--steps` steps into a temporary checkpoint and,
every `--every` steps, restores the 100 test pairs with its EMA weights at S = 0.95 and 0.05 for
each guidance w of `--guidance`. Per snapshot and w: the mean SSIM to the pristine oracle (the
true quality) at both S, its reach, and the PSNR to the GT at S = 0.95, beside the LQ's own (the
restoration issue asks SSIM >= the LQ's + 0.05 and PSNR >= the LQ's - 3 dB at S = 0.95). Stage II
has no learning-rate schedule, so a snapshot at step k is what a k-step run would have trained.

    python benchmarks/stage2_length.py --steps 1000 --every 250      # after dvc repro latent_targets

Writes reports/metrics/stage2_length.csv (with its provenance stamp). Not a pipeline stage.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.guidance import mean_ssim
from iqpfr import conditioned, evaluate, provenance, runtime
from iqpfr.config import load_params
from iqpfr.pipeline import _load_stack
from iqpfr.task import FACE

OUT = ROOT / "reports/metrics/stage2_length.csv"


def mean_psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean PSNR (evaluate.psnr: RGB, 8-bit grid) of images (N, 3, R, R) in [0,1] to references."""
    return float(np.mean([evaluate.psnr(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()) for a, b in zip(x, ref)]))


@torch.no_grad()
def snapshot_rows(model, pairs: dict, weights, step: int, seconds: float) -> list[dict]:
    """One row per guidance w for the model at `step`: SSIM to the oracle at S = 0.95 and 0.05, the
    reach, PSNR to the GT at S = 0.95, and the LQ's own SSIM and PSNR."""
    lq, gt, oracle = pairs["lq"], pairs["gt"], pairs["oracle"]
    base = {"step": step, "lq_ssim_oracle": mean_ssim(lq, oracle), "lq_psnr_gt": mean_psnr(lq, gt),
            "seconds_per_step": round(seconds, 3)}
    rows = []
    for w in weights:
        top, low = model.restore(lq, 0.95, guidance=w), model.restore(lq, 0.05, guidance=w)
        row = {**base, "guidance": w, "ssim_oracle_S0.95": mean_ssim(top, oracle), "ssim_oracle_S0.05": mean_ssim(low, oracle),
               "psnr_gt_S0.95": mean_psnr(top, gt)}
        row["reach"] = row["ssim_oracle_S0.95"] - row["ssim_oracle_S0.05"]
        row["ssim_over_lq"] = row["ssim_oracle_S0.95"] - row["lq_ssim_oracle"]
        row["psnr_over_lq"] = row["psnr_gt_S0.95"] - row["lq_psnr_gt"]
        rows.append(row)
    return rows


def load_pairs(count: int) -> dict[str, torch.Tensor]:
    """The first `count` test pairs: LQ, GT and pristine oracle, each (count, 3, R, R) in [0,1]."""
    return {k: _load_stack(FACE.testset / "pairs", c)[0][:count] for k, c in
            (("lq", "file"), ("gt", "hq_file"), ("oracle", "oracle_file"))}


def measure(params, steps: int, every: int, weights, count: int = 100) -> list[dict]:
    """Train the params' main model for `steps` steps (in the project root: the working directory)
    and return `snapshot_rows` every `every` steps, printing each snapshot's rows."""
    if every < 1 or steps < every:
        raise ValueError("every must be >= 1 and steps >= every")
    if not FACE.targets.exists():
        raise FileNotFoundError(f"{FACE.targets} is missing: run `dvc repro latent_targets` first")
    s2 = replace(params.stage2, steps=steps, checkpoint_every=every)
    stack = load_pairs(count)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "restorer.pt"
        trainer = conditioned.stage2_trainer(params.data, params.degrade, params.vqgan, params.transformer, s2, ckpt,
                                             progress=lambda msg: None)
        for until in range(every, steps + 1, every):
            t0, start = time.perf_counter(), trainer.step
            trainer.train(until=until, checkpoint=ckpt)
            per_step = (time.perf_counter() - t0) / max(trainer.step - start, 1)
            model, _ = conditioned.load_restorer(ckpt, FACE.stage1)  # EMA weights, as the pipeline restores
            rows += snapshot_rows(model, stack, weights, trainer.step, per_step)
            print(pd.DataFrame(rows[-len(weights):]).round(4).to_string(index=False), flush=True)
    return rows


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--every", type=int, default=250)
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0])
    ap.add_argument("--count", type=int, default=100, help="test pairs restored at each snapshot")
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    runtime.configure()
    os.chdir(ROOT)  # the stage's files are relative to the project root
    params = load_params(args.params)
    try:
        table = pd.DataFrame(measure(params, args.steps, args.every, args.guidance, args.count))
    except (ValueError, FileNotFoundError) as err:
        sys.exit(str(err))
    table.to_csv(args.out, index=False, float_format="%.6g")
    provenance.write(args.out, params.data, provenance.sections_of(params),
                     provenance.command("benchmarks/stage2_length.py", argv), models=(str(FACE.stage1), str(FACE.prior)),
                     root=ROOT)
    print(f"wrote {args.out}")
    return table


if __name__ == "__main__":
    main()
