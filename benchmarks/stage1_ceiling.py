"""What the frozen stage I lets two thresholds of the restoration issue reach.

1. Why stage I keeps so little of the GTs' quality: its own ceiling, and the flaws it drops.
`spearman_true_quality_gt_vs_recon` (notebook 02) ranks the held-out GTs by their true quality
(SSIM to the pristine face) and by their common-codebook (lambda = 0) reconstruction's. Two things
can keep the ranks apart, and this script measures each on the trained stage I:

- **the ceiling**: a pristine face reconstructed through stage I reaches a true quality c_i of its
  own (face i's ceiling), so a GT better than c_i cannot come back better than about c_i. What-if:
  Spearman(GT, min(GT, c_i)), the correlation stage I would reach if it reproduced every flaw
  exactly and only capped each face at its own ceiling;
- **the flaws it does not reproduce**: how the reconstruction's change of true quality (recon minus
  GT) follows each capture flaw recorded in the world's manifest (blur sigma, noise sigma, JPEG
  quality), over all held-out GTs and inside the band where most of them sit.

2. How far the prior's score of the outputs can move with S. At S in bin k stage II learns to give
the stage-I codes of the training GTs the prior put in bin k. A stage II that reproduced its
targets exactly would move the outputs' score over the sweep as far as the prior puts the *decoded
targets* (the GTs reconstructed through stage I, both codebooks as `restore` fuses them) of bin 9
from those of bin 0; score guidance (w > 1) extrapolates along S and can go further.
Per bin: the GTs' normalised score S and true quality, and their decoded targets'. The pipeline's
`output_score_at_0.95` minus `output_score_at_0.05` (0.15 asked) is measured on test LQ; this
bound is on training GTs.

    python benchmarks/stage1_ceiling.py     # after dvc repro train_codebook; prints a JSON
    python benchmarks/stage1_ceiling.py --out reports/metrics/stage1_ceiling.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import codebook, quality
from iqpfr.iqanet import spearman
from iqpfr.pipeline import PRIOR, SCORES, WORLD, _load_stack
from iqpfr.task import FACE

FLAWS = ("cap_blur_sigma", "cap_noise_sigma", "cap_jpeg_quality")


@torch.no_grad()
def reconstruct_common(model, x: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """Common-codebook (lambda = 0) reconstruction of images (N, 3, R, R) in [0,1] -> [0,1]."""
    out = []
    for i in range(0, len(x), batch):
        z = model.encode(x[i:i + batch] * 2 - 1)
        out.append(((model.decode(model.quant_c.lookup(model.quant_c.nearest(z))) + 1) / 2).clamp(0, 1))
    return torch.cat(out)


def decomposition(gt: np.ndarray, recon: np.ndarray, ceiling: np.ndarray, flaws: dict[str, np.ndarray],
                  band: tuple[float, float]) -> dict:
    """The figures of the module docstring from per-GT true qualities (N,): the GT's, its
    reconstruction's, and its pristine face's reconstruction's (the ceiling); `flaws` maps a
    manifest column to its (N,) values; `band` is the [low, high) range of GT quality looked into."""
    change = recon - gt
    inside = (gt >= band[0]) & (gt < band[1])
    return {
        "gts": len(gt),
        "spearman_gt_vs_recon": round(spearman(gt, recon), 4),
        "ceiling_mean": round(float(ceiling.mean()), 4),
        "ceiling_range": [round(float(ceiling.min()), 4), round(float(ceiling.max()), 4)],
        "share_of_gts_above_their_ceiling": round(float(np.mean(gt > ceiling)), 4),
        "what_if_flaws_kept_capped_at_ceiling": round(spearman(gt, np.minimum(gt, ceiling)), 4),
        "band": list(band),
        "gts_in_band": inside.sum().item(),
        "spearman_in_band": round(spearman(gt[inside], recon[inside]), 4),
        "spearman_change_vs_flaw": {k: round(spearman(v, change), 4) for k, v in flaws.items()},
        "spearman_change_vs_flaw_in_band": {k: round(spearman(v[inside], change[inside]), 4) for k, v in flaws.items()},
    }


def by_bin(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Per score bin the mean of the columns S_gt, S_target, true_quality_gt, true_quality_target
    (one row per training GT, with its `bin`), and the reach of each: bin 9's mean minus bin 0's."""
    cols = ["S_gt", "S_target", "true_quality_gt", "true_quality_target"]
    table = frame.groupby("bin")[cols].mean().round(4)
    table.insert(0, "gts", frame.groupby("bin").size())
    reach = {f"reach_{c}": round(float(table[c].iloc[-1] - table[c].iloc[0]), 4) for c in cols}
    return table, reach


@torch.no_grad()
def target_reach(model, batch: int = 128) -> tuple[pd.DataFrame, dict]:
    """`by_bin` of the training GTs (data/world/train, their bins in data/scores/train.csv) and
    their decoded targets, scored by the pipeline's prior (data/scores/norm_stats.json)."""
    gt_img, frame = _load_stack(WORLD / "train")
    oracle, _ = _load_stack(WORLD / "train", "oracle_file")
    frame = frame.merge(pd.read_csv(SCORES / "train.csv")[["file", "bin"]], on="file", how="left", validate="one_to_one")
    stats = quality.NormStats.load(SCORES / "norm_stats.json")
    metrics = {n: quality.make_metric(n, "cpu", PRIOR) for n in stats.ensemble}

    def score(x: torch.Tensor) -> np.ndarray:  # (N,) normalised S of images (N, 3, R, R) in [0,1]
        return np.concatenate([stats.ensemble_score({n: m(x[i:i + batch]).numpy() for n, m in metrics.items()})
                               for i in range(0, len(x), batch)])

    target = torch.cat([codebook.reconstruct(model, gt_img[i:i + batch]) for i in range(0, len(gt_img), batch)])
    frame["S_gt"], frame["S_target"] = score(gt_img), score(target)
    frame["true_quality_gt"] = np.asarray(FACE.true_quality(gt_img, oracle), dtype=float)
    frame["true_quality_target"] = np.asarray(FACE.true_quality(target, oracle), dtype=float)
    return by_bin(frame)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--stage1", default=str(FACE.stage1), help="the stage-I checkpoint")
    ap.add_argument("--band", type=float, nargs=2, default=(0.7, 0.9), help="GT true-quality range looked into")
    ap.add_argument("--out", default=None, help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    if not Path(args.stage1).exists() or not (WORLD / "holdout").exists():
        sys.exit(f"needs {args.stage1} and {WORLD / 'holdout'}: run `dvc repro train_codebook` first")
    if not (SCORES / "train.csv").exists() or not PRIOR.exists():
        sys.exit(f"needs {SCORES / 'train.csv'} and {PRIOR}: run `dvc repro train_codebook` first")
    model, info = codebook.load_stage1_model(Path(args.stage1))
    gt_img, frame = _load_stack(WORLD / "holdout")
    oracle, _ = _load_stack(WORLD / "holdout", "oracle_file")
    gt = np.asarray(FACE.true_quality(gt_img, oracle), dtype=float)
    recon = np.asarray(FACE.true_quality(reconstruct_common(model, gt_img), oracle), dtype=float)
    ceiling = np.asarray(FACE.true_quality(reconstruct_common(model, oracle), oracle), dtype=float)
    flaws = {k: frame[k].to_numpy(dtype=float) for k in FLAWS}
    out = {"stage1": args.stage1, "stage1_step": info["step"], **decomposition(gt, recon, ceiling, flaws, tuple(args.band))}
    table, reach = target_reach(model)
    out.update({"targets_by_bin": table.reset_index().to_dict("records"), **reach})
    print(table.to_string())
    print(json.dumps({k: v for k, v in out.items() if k != "targets_by_bin"}, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
