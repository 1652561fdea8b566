"""Where does the restorer read a GT's quality from: the score S, or the LQ input?

Training GTs of the lowest score bins (0-2) and of the highest (8-9) are degraded as in training
(one seeded generator) and restored by the trained main model at S = 0.05, 0.25 and 0.95. For each
group the script prints the mean true quality (SSIM to the pristine oracle) of the GTs, of their
stage-I targets decoded (what stage II is trained to reproduce), of the LQ, and of the outputs at
each S, plus the top-1 accuracy of the C codes against the targets at S = 0.05 and 0.95.

If the outputs of the two groups differ more between groups (same S) than within a group across S,
the Transformer reads the quality off the LQ, which shows the GT's flaws, and S adds little.

    python benchmarks/knob_diagnosis.py                 # after dvc repro; --guidance W to compare
    python benchmarks/knob_diagnosis.py --raw           # the raw weights instead of their EMA

The model restores with its EMA weights, as the pipeline does (`stage2.ema_decay` > 0), unless --raw.
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

from iqpfr import runtime  # noqa: E402
from iqpfr.conditioned import DegradedLQ, load_restorer, load_targets  # noqa: E402
from iqpfr.config import load_params  # noqa: E402
from iqpfr.pipeline import _load_stack, degrade_ranges  # noqa: E402
from iqpfr.task import FACE  # noqa: E402
from iqpfr.transformer import score_to_bin  # noqa: E402

GROUPS = {"bins 0-2 (poor GTs)": [0, 1, 2], "bins 8-9 (good GTs)": [8, 9]}
SCORES = (0.05, 0.25, 0.95)


@torch.no_grad()
def diagnose(model, gts, oracle, idx_c, idx_h, lq, true_quality) -> dict:
    """One group: GTs, oracles, LQ (N, 3, R, R) in [0,1]; unflipped targets (N, T). Mean true qualities
    and C-code accuracies as a flat dict."""
    n = len(gts)
    row = {"n": n, "gt": true_quality(gts, oracle).mean(),
           "target_decoded": true_quality(model.decode(model.codes(idx_c, idx_h)), oracle).mean(),
           "lq": true_quality(lq, oracle).mean()}
    for s in SCORES:
        row[f"out_S{s}"] = true_quality(model.restore(lq, s), oracle).mean()
    z = model.encoder(lq * 2 - 1)
    for s in (SCORES[0], SCORES[-1]):
        bins = score_to_bin(torch.full((n,), s))
        lc, _ = model.guided_logits(z, bins, model.guidance)
        row[f"acc_c_S{s}"] = (lc.argmax(-1) == idx_c).float().mean().item()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--per-group", type=int, default=60)
    ap.add_argument("--raw", action="store_true", help="the raw weights instead of their EMA")
    args = ap.parse_args()
    runtime.configure()
    params = load_params(ROOT / "params.yaml")
    x, _ = _load_stack(ROOT / FACE.world / "train")
    o, _ = _load_stack(ROOT / FACE.world / "train", "oracle_file")
    bins = pd.read_csv(ROOT / FACE.scores / "train.csv")["bin"].to_numpy()
    targets = load_targets(len(x))
    model, _ = load_restorer(ROOT / FACE.stage2, ROOT / FACE.stage1, ema=not args.raw, guidance=args.guidance)
    make, rng = DegradedLQ(degrade_ranges(params.degrade)), np.random.default_rng(5)
    rows = {}
    for name, group in GROUPS.items():
        sel = np.where(np.isin(bins, group))[0][:args.per_group]
        lq = torch.stack([make(x[i], int(i), False, rng) for i in sel])
        tc, th = (targets[k][sel][:, 0].long().flatten(1) for k in ("idx_c", "idx_h"))
        rows[name] = diagnose(model, x[sel], o[sel], tc, th, lq, FACE.true_quality)
    print(f"guidance {args.guidance}, {'raw' if args.raw else 'EMA'} weights; true quality = SSIM to the oracle")
    print(pd.DataFrame(rows).T.round(3).to_string())


if __name__ == "__main__":
    main()
