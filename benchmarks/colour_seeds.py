"""The colour task's claims over stage-II seeds (notebook 06, section 6): do its verdicts survive
training noise?

The face claims train three stage-II seeds per compared row and call a claim supported only when
every seed supports it (notebook 04). The colour budget has no room for that inside the pipeline,
so this benchmark measures it after `dvc repro`. The params' own seed (`stage2.seed`) is the
pipeline's models, read as they are; every other seed of --seeds trains both rows exactly as the
pipeline does (same data, face rows to start from, steps and EMA) with `stage2.seed` set to it,
which draws other batches, flips, LQ degradations and score dropouts. Each seed is evaluated as
notebook 06 evaluates the pipeline (`enhancement.run` at evaluation.score; the test set as a
measurement, never a choice) and the seeds' claims are merged as notebook 04 merges them
(`comparison.merge_seed_claims`). Each claim also gets a seed-averaged difference: per test image,
each row's measure averaged over the seeds, then the paired bootstrap, so that training noise is
averaged out and the test set's sampling is what the interval holds.

    python benchmarks/colour_seeds.py                 # seeds 0 1 2: ~12 min on 2 cores
    python benchmarks/colour_seeds.py --seeds 0 1 2 3
    python benchmarks/colour_seeds.py --on confirm --count 300   # 300 fresh faces instead of the test set

`--on confirm` measures on faces of a split of their own ("confirm": fresh faces and LQ drawn with
the test set's recipe, on which no design choice was made; the validation faces of
colour_design.py chose the design, so they would flatter it) instead of the test set, as many as
--count: whether a lead that the 100 test faces cannot resolve holds on more faces, without
enlarging the test set after its results.

Writes reports/metrics/colour_seeds.csv (one row per claim: per-seed differences and verdicts,
the every-seed verdict, the seed-averaged difference with its interval and verdict) and
reports/metrics/colour_seeds_rows.csv (per seed and row: the mean of each measure);
colour_seeds_confirm{,_rows}.csv with --on confirm. Notebook 06 shows them. Not a pipeline stage: the extra seeds' models live in a temporary folder.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))  # colour_budget, colour_design

from colour_budget import evaluate_pair, snapshot_rows  # noqa: E402
from colour_design import pipeline_models, validation_data  # noqa: E402

from iqpfr import enhancement, evaluate, provenance, runtime  # noqa: E402
from iqpfr.comparison import merge_seed_claims  # noqa: E402
from iqpfr.config import load_params, task_params  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402

ROW_MEASURES = ["ciede2000_oracle", "ciede2000_oracle_centre", "ciede2000_oracle_border", "colourfulness",
                "true_quality", "S"]


def seed_evaluations(params, seeds: list[int], tmp: Path, progress=print, data: Path = COLOUR.data) -> dict[int, dict]:
    """{seed: `enhancement.run` result on the test set of task data root `data`} of the colour rows
    trained with each stage-II seed; the params' own seed reads the pipeline's models instead of
    training them again."""
    cp = task_params(params, "colour")
    steps, own = cp.stage2.steps, cp.stage2.seed
    rows = {"baseline_plus": "main", "baseline": params.colour.baseline}
    out = {}
    for seed in seeds:
        t0 = time.time()
        if seed == own:
            main, base = COLOUR.stage2, COLOUR.variants / params.colour.baseline / "restorer.pt"
        else:
            paths = snapshot_rows(params, rows, steps, [steps], tmp / f"seed{seed}", progress, seed=seed)
            main, base = paths["baseline_plus", steps], paths["baseline", steps]
        out[seed] = evaluate_pair(main, base, tmp / f"seed{seed}", params.evaluation.score, cp.transformer.guidance,
                                  data=data)
        progress(f"seed {seed}: {time.time() - t0:.0f} s")
    return out


def seed_claims(evs: dict[int, dict], spec: enhancement.Spec = enhancement.COLOUR) -> pd.DataFrame:
    """One row per claim: `merge_seed_claims` of the seeds' claims (diff_seed<s>, verdict_seed<s>,
    the every-seed `verdict`) and the seed-averaged difference (`diff_seed_mean`, `low_seed_mean`,
    `high_seed_mean`, `verdict_seed_mean`): per image, each row's measure averaged over the seeds."""
    merged = merge_seed_claims({s: ev["claims"] for s, ev in evs.items()})
    averaged = []
    for rec in merged.to_dict("records"):
        a, b = (np.mean([ev["tables"][row][rec["metric"]].to_numpy() for ev in evs.values()], axis=0)
                for row in (rec["a"], rec["b"]))
        d = evaluate.paired_difference(a, b)
        averaged.append({"diff_seed_mean": d["mean"], "low_seed_mean": d["low"], "high_seed_mean": d["high"],
                         "verdict_seed_mean": evaluate.verdict(d, spec.directions[rec["metric"]])})
    keep = ["claim", "a", "b", "metric", "seeds", "verdict"] + [c for c in merged if c.startswith(("diff_seed", "verdict_seed"))]
    return pd.concat([merged[keep], pd.DataFrame(averaged)], axis=1)


def seed_rows(evs: dict[int, dict]) -> pd.DataFrame:
    """Per seed and row, the mean of each of ROW_MEASURES (and the gray outputs' share of the GTs'
    colourfulness, `enhancement.gray_regions`)."""
    out = []
    for seed, ev in evs.items():
        ratio = enhancement.gray_regions(ev["summary"])["gray_colourfulness_ratio_to_gt"]
        for row, s in ev["summary"].items():
            out.append({"seed": seed, "row": row, "n": s["n"], **{k: s[k] for k in ROW_MEASURES},
                        "gray_colourfulness_ratio_to_gt": ratio})
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--on", choices=("test", "confirm"), default="test",
                    help="the pipeline's test set (default) or --count fresh faces of split 'confirm'")
    ap.add_argument("--count", type=int, default=300, help="faces for --on confirm")
    ap.add_argument("--root", default=str(ROOT), help="the project whose params, data and models are measured")
    ap.add_argument("--out", default=None,
                    help="default: <root>/reports/metrics/colour_seeds[_confirm].csv (and _rows.csv)")
    args = ap.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or len(args.seeds) < 2:
        sys.exit(f"--seeds: at least two different seeds, got {args.seeds}")
    if args.count < 2:
        sys.exit(f"--count: at least 2 faces, got {args.count}")
    root = Path(args.root).resolve()
    suffix = "_confirm" if args.on == "confirm" else ""
    out = Path(args.out).resolve() if args.out else root / f"reports/metrics/colour_seeds{suffix}.csv"
    os.chdir(root)  # the tasks' paths are relative to the project
    runtime.configure()
    params = load_params(root / "params.yaml")
    with tempfile.TemporaryDirectory() as d:
        data = validation_data(params, Path(d) / "confirm", "confirm", args.count) if args.on == "confirm" else COLOUR.data
        evs = seed_evaluations(params, args.seeds, Path(d), data=data)
    claims, rows = seed_claims(evs), seed_rows(evs)
    out.parent.mkdir(parents=True, exist_ok=True)
    claims.to_csv(out, index=False, float_format="%.6g")
    rows.to_csv(out.with_name(out.stem + "_rows.csv"), index=False, float_format="%.6g")
    cp = task_params(params, "colour")
    models = pipeline_models(params) if cp.stage2.seed in args.seeds else []  # its rows are the pipeline's models
    for path in (out, out.with_name(out.stem + "_rows.csv")):
        provenance.write(path, cp.data, provenance.sections_of(cp), provenance.command("benchmarks/colour_seeds.py", argv),
                         models=models)
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(claims.drop(columns=["a", "b"]).round(3).to_string(index=False))
        print(rows[rows["row"].isin(["baseline", "baseline_plus", "baseline_plus_gray"])].round(3).to_string(index=False))
    return claims, rows


if __name__ == "__main__":
    main()
