"""The colour task's design choices, measured (notebook 06): where its rows start, how often a
training LQ is gray, the score guidance of Baseline+, and whether the restorer applies AdaIN.

For each grayscale probability in --gray and each start in --start, the task's unconditioned
baseline and Baseline+ are trained exactly as the pipeline trains them (params.yaml with
`colour.overrides`, only `degrade.gray_prob` and `colour.finetune` changed; same seeds, data and
length), and each pair is evaluated as notebook 06 evaluates the pipeline's models, at each
guidance w of --guidance and with or without AdaIN (--adain):

- Start. From stage I, the Transformer and encoder learn faces and colour in 200 steps; fine-tuned
  (`colour.finetune`), each row starts from the face row of its recipe (Baseline+ from the face
  task's Baseline+, the baseline from its baseline; our choice, the method's description is silent),
  and the 200 steps go to colour.
- A gray LQ is the only training signal for colourisation: in a 200-step run at probability 0.5
  the rows see about 1600 gray faces.
- Guidance w > 1 pushes Baseline+'s codes along what the score S changes: more colour, and, where
  the gray input does not say which, more of the wrong colour.
- AdaIN (CodeFormer's decoding default) renormalises the predicted codes to the channel means and
  deviations of the LQ's latent. Those statistics hold the input's global colour, so AdaIN hands a
  gray input's gray, or a cast, back to the output.

The pipeline's own design (params.yaml) is not retrained: its rows are the pipeline's models
(`dvc repro` first; colour_budget.py checks that a run of this trainer equals them bit for bit).

The designs are measured on a **validation set**, never on the test set that notebook 06 reports:
the test set's recipe (colour.num_test GTs from the task's GT distribution, the task's degradations,
colour.test_gray_prob gray LQ) applied to faces of their own (split "val") with an LQ seed of their
own (colour.test_seed + 1). `--on test` measures the test set instead, for comparison only.

    python benchmarks/colour_design.py --start both --guidance 1 2 3 4   # the committed table: ~8 min on 2 cores
    python benchmarks/colour_design.py --guidance 1 2 --ema-decay 0.995 0.9875 0 --out reports/metrics/colour_ema.csv
    python benchmarks/colour_design.py --steps 400 --out reports/metrics/colour_steps.csv   # a longer run of the rows
    python benchmarks/colour_design.py --gray 0.5 0.65 0.8 --out reports/metrics/colour_gray.csv   # the gray share, fine-tuned
    python benchmarks/colour_design.py --gray 0.25 0.5 --adain both

Writes reports/metrics/colour_design.csv (one row per design; --out names another file: colour_ema.csv,
colour_steps.csv and colour_gray.csv hold the EMA, length and gray-share measurements); notebook 06 shows them. Not a pipeline
stage: it trains models of its own in a temporary folder.
"""
from __future__ import annotations

import argparse
import copy
import itertools
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
from iqpfr import colour, provenance, runtime  # noqa: E402
from iqpfr.config import load_params, task_params  # noqa: E402
from iqpfr.pipeline import degrade_ranges  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402
from iqpfr.world import QualityDistribution  # noqa: E402


def design_params(params, gray: float, start: str, ema_decay: float | None = None):
    """The params with the colour task's `degrade.gray_prob` override set to `gray`, its rows
    started from `start`: "face" (params.yaml's `colour.finetune`) or "stage1" (no fine-tuning), and
    (unless None) its `stage2.ema_decay` set to `ema_decay` (0: the raw weights)."""
    overrides = copy.deepcopy(params.colour.overrides)
    overrides.setdefault("degrade", {})["gray_prob"] = gray
    if ema_decay is not None:
        overrides.setdefault("stage2", {})["ema_decay"] = ema_decay
    finetune = params.colour.finetune if start == "face" else {}
    return replace(params, colour=replace(params.colour, overrides=overrides, finetune=finetune))


# the LQ seed of each split of faces written with the test set's recipe: apart from the test set's own
LQ_SEED_OFFSETS = {"val": 1, "confirm": 2}


def validation_data(params, dest: Path, split: str = "val", count: int | None = None) -> Path:
    """Write `count` (default colour.num_test) faces of `split` ("val": the design choices'
    validation faces; "confirm": fresh faces no choice was made on) with the colour test set's recipe
    but faces and LQ of their own (LQ seed colour.test_seed + LQ_SEED_OFFSETS[split]) to
    dest/testset/{pairs,gray}, link dest/scores to the task's prior normalisation; returns dest (a
    task data root for `evaluate_snapshot`)."""
    cp, col = task_params(params, "colour"), params.colour
    ranges = replace(degrade_ranges(cp.degrade), gray_prob=col.test_gray_prob)
    colour.write_testset(dest / "testset", split, col.num_test if count is None else count, cp.data,
                         QualityDistribution(**col.gts.__dict__), ranges, col.test_seed + LQ_SEED_OFFSETS[split])
    (dest / "scores").symlink_to(COLOUR.scores.resolve())
    return dest


def pipeline_models(params) -> list[str]:
    """The pipeline's colour models (paths in the project): a row made with the design, seed and
    settings params.yaml names is these models' outputs, so its table describes them."""
    return [str(p) for p in (COLOUR.stage1, COLOUR.prior, COLOUR.stage2,
                             COLOUR.variants / params.colour.baseline / "restorer.pt")]


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gray", type=float, nargs="+", default=None,
                    help="grayscale probabilities to train with (default: the params' value)")
    ap.add_argument("--adain", choices=("both", "off", "on"), default="off",
                    help="restore without AdaIN (default, as the task does), with it, or both ways")
    ap.add_argument("--start", choices=("params", "face", "stage1", "both"), default="params",
                    help="rows fine-tuned from the face rows (colour.finetune), trained from stage I, both, "
                         "or as params.yaml says (default)")
    ap.add_argument("--ema-decay", type=float, nargs="+", default=None,
                    help="stage-II EMA decays to train with (default: the task's stage2.ema_decay; 0 = raw weights)")
    ap.add_argument("--steps", type=int, default=None,
                    help="stage-II steps of every trained row (default: the task's stage2.steps)")
    ap.add_argument("--guidance", type=float, nargs="+", default=None,
                    help="score guidance w of Baseline+ at restoring (default: the task's transformer.guidance)")
    ap.add_argument("--on", choices=("val", "test"), default="val",
                    help="measure on the validation faces (default) or on the test set (comparison only)")
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
    grays = sorted(set(args.gray if args.gray else [own]))
    if any(not 0.0 <= g <= 1.0 for g in grays):
        sys.exit(f"--gray: probabilities in [0, 1], got {grays}")
    own_decay = cp.stage2.ema_decay
    decays = sorted(set(args.ema_decay if args.ema_decay else [own_decay]), reverse=True)
    if any(not 0.0 <= d < 1.0 for d in decays):
        sys.exit(f"--ema-decay: decays in [0, 1), got {decays}")
    own_steps = cp.stage2.steps
    steps = args.steps if args.steps is not None else own_steps
    if steps < 1:
        sys.exit(f"--steps: at least 1, got {steps}")
    own_start = "face" if params.colour.finetune else "stage1"
    starts = {"params": [own_start], "both": ["face", "stage1"]}.get(args.start, [args.start])
    if "face" in starts and not params.colour.finetune:
        sys.exit("--start face/both: params.yaml's colour.finetune names no face rows to start from")
    weights = args.guidance or [cp.transformer.guidance]
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = validation_data(params, tmp / "val") if args.on == "val" else COLOUR.data
        for g, start, decay in itertools.product(grays, starts, decays):
            pipeline = g == own and start == own_start and decay == own_decay and steps == own_steps
            if pipeline:
                main_ckpt, base_ckpt = COLOUR.stage2, COLOUR.variants / params.colour.baseline / "restorer.pt"
            else:
                paths = snapshot_rows(design_params(params, g, start, decay),
                                      {"baseline_plus": "main", "baseline": params.colour.baseline},
                                      steps, [steps], tmp / f"gray{g}-{start}-ema{decay}-{steps}")
                main_ckpt, base_ckpt = paths["baseline_plus", steps], paths["baseline", steps]
            for adain, w in itertools.product({"both": (True, False), "on": (True,), "off": (False,)}[args.adain], weights):
                r = evaluate_snapshot(main_ckpt, base_ckpt, tmp / "eval", params.evaluation.score, w, adain=adain, data=data)
                rows.append({"gray_prob": g, "start": start, "ema_decay": decay, "guidance": w, "adain": adain, "steps": steps,
                             "pipeline": pipeline and w == cp.transformer.guidance, "set": args.on, **r})
                print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table.to_csv(out, index=False, float_format="%.6g")
    models = pipeline_models(params) if table["pipeline"].any() else []  # its pipeline row is the pipeline's models
    provenance.write(out, cp.data, provenance.sections_of(cp), provenance.command("benchmarks/colour_design.py", argv),
                     models=models)
    return table


if __name__ == "__main__":
    main()
