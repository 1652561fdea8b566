"""The colour task's two design choices, measured (notebook 06): how often a training LQ is gray,
and whether the restorer applies AdaIN at decoding.

For each grayscale probability in --gray, the task's unconditioned baseline and Baseline+ are
trained exactly as the pipeline trains them (params.yaml with `colour.overrides`, only
`degrade.gray_prob` changed; same seeds, data and length) and each pair is evaluated as notebook 06
evaluates the pipeline's models, once with AdaIN and once without:

- AdaIN (CodeFormer's decoding default) renormalises the predicted codes to the channel means and
  deviations of the LQ's latent. Those statistics hold the input's global colour, so AdaIN hands a
  gray input's gray, or a cast, back to the output.
- A gray LQ is the only training signal for colourisation: in a 200-step run at probability 0.25
  the rows see about 800 gray faces.

The pipeline's own probability (params.yaml) is not retrained: its rows are the pipeline's models
(`dvc repro` first; colour_budget.py checks that a run of this trainer equals them bit for bit).

    python benchmarks/colour_design.py                    # gray 0.25, 0.4 and the params' value: ~10 min on 2 cores
    python benchmarks/colour_design.py --gray 0.25

Writes reports/metrics/colour_design.csv (one row per probability and AdaIN setting); notebook 06
shows it. Not a pipeline stage: it trains models of its own in a temporary folder.
"""
from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from colour_budget import evaluate_snapshot, snapshot_rows  # noqa: E402
from iqpfr import runtime  # noqa: E402
from iqpfr.config import load_params, task_params  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402


def with_gray(params, gray: float):
    """The params with the colour task's `degrade.gray_prob` override set to `gray`."""
    overrides = copy.deepcopy(params.colour.overrides)
    overrides.setdefault("degrade", {})["gray_prob"] = gray
    return replace(params, colour=replace(params.colour, overrides=overrides))


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gray", type=float, nargs="+", default=None,
                    help="grayscale probabilities to train with (default: 0.25, 0.4 and the params' value)")
    ap.add_argument("--root", default=str(ROOT), help="the project whose data and models are used")
    ap.add_argument("--out", default=None, help="default: ROOT/reports/metrics/colour_design.csv")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    out = Path(args.out).resolve() if args.out else root / "reports/metrics/colour_design.csv"
    os.chdir(root)  # the tasks' paths are relative to the project
    runtime.configure()
    params = load_params(root / "params.yaml")
    cp = task_params(params, "colour")
    own = cp.degrade.gray_prob
    grays = sorted(set(args.gray if args.gray else [0.25, 0.4, own]))
    if any(not 0.0 <= g <= 1.0 for g in grays):
        sys.exit(f"--gray: probabilities in [0, 1], got {grays}")
    steps = cp.stage2.steps
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for g in grays:
            if g == own:
                main_ckpt, base_ckpt = COLOUR.stage2, COLOUR.variants / params.colour.baseline / "restorer.pt"
            else:
                run = tmp / f"gray{g}"
                paths = snapshot_rows(with_gray(params, g), {"baseline_plus": "main", "baseline": params.colour.baseline},
                                      steps, [steps], run)
                main_ckpt, base_ckpt = paths["baseline_plus", steps], paths["baseline", steps]
            for adain in (True, False):
                r = evaluate_snapshot(main_ckpt, base_ckpt, tmp / "eval", params.evaluation.score,
                                      cp.transformer.guidance, adain=adain)
                rows.append({"gray_prob": g, "adain": adain, "steps": steps, "pipeline": g == own, **r})
                print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False, float_format="%.6g")
    return table


if __name__ == "__main__":
    main()
