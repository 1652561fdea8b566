"""Choosing the score guidance w (params.yaml `transformer.guidance`) on held-out GTs, not on the test set.

Classifier-free guidance of the score: the Transformer also learns without a score (a GT's bin is
replaced by "no score" with probability `transformer.score_dropout`), and restores with

    l = l_none + w (l_S - l_none)

so w > 1 amplifies what the requested quality S changes in the code logits. This script restores
the held-out GTs of the synthetic world (never trained on; their LQ made with the training
degradation and a fixed seed) with the trained main model at S = 0.05, 0.5 and 0.95 for several w,
and prints the mean SSIM to the pristine oracle (the true quality) and the knob's reach (S = 0.95
minus S = 0.05), and beside them the learned prior's score of the outputs (normalised as in
training) and its reach: the restoration issue asks the prior's score to move by 0.15 over the
sweep. The rule: the smallest w whose true-quality reach is at least `--reach`, whose prior-score
reach is at least `--prior-reach` (the issue's two asks of the knob, here on held-out GTs, never on
the test set) and whose quality at S = 0.95 is within `--cost` of w = 1's.

    python benchmarks/guidance.py        # after dvc repro (models/stage2 trained with score dropout)

Writes reports/metrics/guidance_holdout.csv. Not a pipeline stage: it reads the trained model.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import evaluate, provenance, runtime  # noqa: E402
from iqpfr.conditioned import DegradedLQ, load_restorer  # noqa: E402
from iqpfr.config import load_params  # noqa: E402
from iqpfr.pipeline import WORLD, _load_stack, degrade_ranges  # noqa: E402
from iqpfr.task import FACE  # noqa: E402

SCORES = (0.05, 0.5, 0.95)


def holdout_lq(gts: torch.Tensor, ranges, seed: int = 77) -> torch.Tensor:
    """Held-out GTs (N, 3, R, R) in [0,1] degraded as in training, one seeded generator: (N, 3, R, R)."""
    make, rng = DegradedLQ(ranges), np.random.default_rng(seed)
    return torch.stack([make(gts[i], i, False, rng) for i in range(len(gts))])


def mean_ssim(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean SSIM of images (N, 3, R, R) in [0,1] to references of the same shape."""
    return float(np.mean([evaluate.ssim(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()) for a, b in zip(x, ref)]))


@torch.no_grad()
def sweep(model, lq: torch.Tensor, oracle: torch.Tensor, weights, score=None) -> pd.DataFrame:
    """One row per guidance w: mean SSIM to the oracle at each S of SCORES and the reach; with
    `score` (images -> (N,) prior scores) also the outputs' mean prior score at each S and its reach."""
    rows = []
    for w in weights:
        row = {"guidance": w}
        for s in SCORES:
            out = model.restore(lq, s, guidance=w)
            row[f"ssim_oracle_S{s}"] = mean_ssim(out, oracle)
            if score is not None:
                row[f"prior_S{s}"] = float(np.mean(score(out)))
        row["reach"] = row[f"ssim_oracle_S{SCORES[-1]}"] - row[f"ssim_oracle_S{SCORES[0]}"]
        if score is not None:
            row["prior_reach"] = row[f"prior_S{SCORES[-1]}"] - row[f"prior_S{SCORES[0]}"]
        rows.append(row)
    return pd.DataFrame(rows)


def choose(table: pd.DataFrame, reach: float, cost: float, prior_reach: float = 0.0) -> float | None:
    """The smallest w with reach >= `reach`, prior reach >= `prior_reach` (where the table has it) and
    quality at the top S within `cost` of w = 1's; None if none."""
    top = f"ssim_oracle_S{SCORES[-1]}"
    plain = table.loc[table["guidance"] == 1.0, top].iloc[0]
    ok = (table["reach"] >= reach) & (table[top] >= plain - cost)
    if "prior_reach" in table:
        ok &= table["prior_reach"] >= prior_reach
    ok = table[ok]
    return float(ok["guidance"].min()) if len(ok) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    ap.add_argument("--reach", type=float, default=0.05, help="wanted SSIM reach of the S knob (the restoration issue's)")
    ap.add_argument("--prior-reach", type=float, default=0.15, help="wanted reach of the prior's score (the restoration issue's)")
    ap.add_argument("--cost", type=float, default=0.005, help="largest SSIM loss at S = 0.95 against w = 1")
    ap.add_argument("--out", default=str(ROOT / "reports/metrics/guidance_holdout.csv"))
    args = ap.parse_args()
    runtime.configure()
    params = load_params(ROOT / "params.yaml")
    gts, _ = _load_stack(ROOT / WORLD / "holdout")
    oracle, _ = _load_stack(ROOT / WORLD / "holdout", "oracle_file")
    lq = holdout_lq(gts, degrade_ranges(params.degrade))
    model, info = load_restorer(ROOT / "models/stage2/restorer.pt", ROOT / "models/stage1/vqgan.pt")
    if not model.cfg.null_bin:
        sys.exit("models/stage2/restorer.pt was trained without score dropout: guidance cannot be measured")
    prior = evaluate.Judges.load(ROOT / FACE.scores / "norm_stats.json", ROOT / FACE.prior, [], params.evaluation.judge_size,
                                 params.scoring.offline)  # the prior alone, as evaluate scores with it
    table = sweep(model, lq, oracle, args.weights, prior.prior_score)
    print(f"{len(gts)} held-out GTs; LQ {mean_ssim(lq, oracle):.4f}, GT {mean_ssim(gts, oracle):.4f} SSIM to the oracle; "
          f"model at step {info['step']} (score dropout {info['train_config']['score_dropout']})")
    print(table.round(4).to_string(index=False))
    w = choose(table, args.reach, args.cost, args.prior_reach)
    print(f"chosen: guidance {w} (reach >= {args.reach}, prior reach >= {args.prior_reach}, cost at S = 0.95 <= "
          f"{args.cost}); params.yaml has "
          f"{params.transformer.guidance}" if w is not None else "no w meets the three conditions")
    table.to_csv(args.out, index=False, float_format="%.6g")
    provenance.write(args.out, params.data, provenance.sections_of(params), provenance.command("benchmarks/guidance.py", None),
                     models=("models/stage2/restorer.pt", "models/stage1/vqgan.pt"), root=ROOT)


if __name__ == "__main__":
    main()
