"""Evaluation of an enhancement task (underwater; the colour task builds on it): every row on the
task's seeded test set, against the clean scene the synthetic world rendered.

Rows: `lq` (the raw input), `classical` (gray-world white balance + CLAHE), `baseline` (the
unconditioned variant named by the task's section), `iqpfr` (the main model at the evaluation
score S) and `reference` (the training-style reference of each test image: what a network that
imitates the references aims at).

Per image: `psnr_clean` (RGB), `ssim_clean` (luma), `ciede2000_clean` (mean CIEDE2000, lower is
better), `true_quality` (the task's definition), `uciqe`, `uiqm` (no-reference underwater
judges, reported beside) and `S` (the task's learned prior, normalised with the training
statistics). Claims are paired bootstrap intervals as in notebook 04.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import evaluate, quality, truequality, uwmetrics
from .conditioned import BIN_CENTRES, load_restorer, score_sweep
from .iqanet import spearman
from .pipeline import _load_stack
from .task import Task

ROWS = ("lq", "classical", "baseline", "iqpfr", "reference")
DIRECTIONS = {"psnr_clean": "higher", "ssim_clean": "higher", "ciede2000_clean": "lower", "true_quality": "higher",
              "uciqe": "higher", "uiqm": "higher", "S": "higher"}
CLAIMS = [  # (claim, row a, row b, metric)
    ("IQPFR is closer to the clean scene than the raw input (true quality)", "iqpfr", "lq", "true_quality"),
    ("IQPFR's colours are closer to the clean scene than the raw input's", "iqpfr", "lq", "ciede2000_clean"),
    ("IQPFR beats the unconditioned baseline (true quality)", "iqpfr", "baseline", "true_quality"),
    ("IQPFR's colours beat the unconditioned baseline's", "iqpfr", "baseline", "ciede2000_clean"),
    ("IQPFR beats the classical method (true quality)", "iqpfr", "classical", "true_quality"),
    ("IQPFR exceeds the references' own true quality", "iqpfr", "reference", "true_quality"),
]


def classical(x: torch.Tensor) -> torch.Tensor:
    """The classical baseline on a batch (N, 3, R, R) in [0,1]."""
    out = [uwmetrics.classical_enhance(im) for im in x.permute(0, 2, 3, 1).numpy()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


def measure(x: torch.Tensor, clean: torch.Tensor, task: Task, prior_score) -> pd.DataFrame:
    """Per-image table of a row's images (N, 3, R, R) in [0,1] against the clean scenes."""
    a, b = x.permute(0, 2, 3, 1).numpy(), clean.permute(0, 2, 3, 1).numpy()
    return pd.DataFrame({
        "psnr_clean": [evaluate.psnr(u, v) for u, v in zip(a, b)],
        "ssim_clean": [truequality.luma(u, v) for u, v in zip(a, b)],
        "ciede2000_clean": [truequality.ciede2000(u, v) for u, v in zip(a, b)],
        "true_quality": task.true_quality(x, clean),
        "uciqe": [uwmetrics.uciqe(u) for u in a],
        "uiqm": [uwmetrics.uiqm(u) for u in a],
        "S": prior_score(x),
    })


@torch.no_grad()
def run(task: Task, baseline: str, score: float = 0.95, sweep_count: int = 64, grid_count: int = 6) -> dict:
    """Evaluate every row on the task's test pairs; the S sweep of the main model; the claims."""
    t0 = time.time()
    pairs = task.testset / "pairs"
    lq, _ = _load_stack(pairs, "file")
    ref, _ = _load_stack(pairs, "hq_file")
    clean, _ = _load_stack(pairs, "oracle_file")
    stats = quality.NormStats.load(task.scores / "norm_stats.json")
    metrics = {n: quality.make_metric(n, "cpu", task.prior) for n in stats.ensemble}

    def prior_score(x: torch.Tensor) -> np.ndarray:
        return stats.ensemble_score({n: torch.cat([m(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy()
                                     for n, m in metrics.items()})

    main, _ = load_restorer(task.stage2, task.stage1)
    base, _ = load_restorer(task.variants / baseline / "restorer.pt", task.stage1)
    images = {"lq": lq, "classical": classical(lq), "baseline": score_sweep(base, lq, [score])[score],
              "iqpfr": score_sweep(main, lq, [score])[score], "reference": ref}
    tables = {row: measure(images[row], clean, task, prior_score) for row in ROWS}
    summary = {row: evaluate.summarise(t) for row, t in tables.items()}
    claims = []
    for text, a, b, metric in CLAIMS:
        d = evaluate.paired_difference(tables[a][metric].to_numpy(), tables[b][metric].to_numpy())
        claims.append({"claim": text, "a": a, "b": b, "metric": metric, "mean_a": summary[a][metric],
                       "mean_b": summary[b][metric], "diff": d["mean"], "low": d["low"], "high": d["high"],
                       "verdict": evaluate.verdict(d, DIRECTIONS[metric])})
    sweep = score_sweep(main, lq[:sweep_count])
    sweep_tq = {s: float(task.true_quality(x, clean[:sweep_count]).mean()) for s, x in sweep.items()}
    sweep_s = {s: float(prior_score(x).mean()) for s, x in sweep.items()}
    return {"tables": tables, "summary": summary, "claims": pd.DataFrame(claims),
            "grid": {row: images[row][:grid_count] for row in ROWS} | {"clean": clean[:grid_count]},
            "sweep": {"S": list(BIN_CENTRES), "true_quality": [sweep_tq[s] for s in BIN_CENTRES],
                      "S_output": [sweep_s[s] for s in BIN_CENTRES]},
            "spearman_S_vs_output_score": spearman(BIN_CENTRES, [sweep_s[s] for s in BIN_CENTRES]),
            "spearman_S_vs_true_quality": spearman(BIN_CENTRES, [sweep_tq[s] for s in BIN_CENTRES]),
            "seconds": time.time() - t0}
