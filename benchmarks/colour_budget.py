"""The colour task (notebook 06): what limits its rows, and what training budget would change it.

Two measurements on the colour task's own data, after `dvc repro`:

1. **The ceiling of the frozen stage I.** The colour task restores through the face task's stage I.
   The colour test set's pristine faces and GTs, encoded and decoded with the common codebook
   (lambda = 0), bound what any code prediction can give: their CIEDE2000 to the pristine face and
   their colourfulness against the originals'.
2. **The training-length curve.** The task's unconditioned baseline and Baseline+ trained exactly as
   the pipeline trains them (params.yaml with `colour.overrides`: same seeds, data and settings) for
   up to --steps steps and snapshotted at each step of --at. Each snapshot is evaluated as notebook 06
   evaluates the pipeline's models (`enhancement.run` at evaluation.score). The stage-II loop has no
   learning-rate schedule and draws each batch from (seed, step), so the snapshot at step k is the
   k-step run; at the pipeline's own length the snapshot is checked against the pipeline's models.

    python benchmarks/colour_budget.py                  # 200 .. 1000 steps: ~16 min on 2 cores
    python benchmarks/colour_budget.py --steps 400 --at 200 400
    python benchmarks/colour_budget.py --true-scores    # Baseline+ on the GTs' true quality (an oracle prior)
    python benchmarks/colour_budget.py --prior-images 2800 --steps 200 --at 200   # on a prior with more labels

With --true-scores Baseline+ learns its score bins from the GTs' true colour quality instead of the
learned prior's S: whether a prior that ranked colour perfectly would let Baseline+ win. With
--prior-images N it learns them from the S of a colour prior trained as the pipeline trains its
own on N labelled images (`colour_prior.py --train-images`), normalised over the training GTs as
the score stage normalises (min to max): whether a better learned prior would.

Writes reports/metrics/colour_budget.csv (one row per snapshot; colour_budget_true_scores.csv with
--true-scores, colour_budget_prior<N>.csv with --prior-images) and reports/metrics/colour_ceiling.json; notebook 06 shows them. Not a pipeline
stage: it trains models of its own in a temporary folder.
"""
from __future__ import annotations

import argparse
import json
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
sys.path.insert(0, str(ROOT / "benchmarks"))  # colour_prior

from iqpfr import colour, enhancement, iqanet, provenance, runtime, truequality  # noqa: E402
from iqpfr.codebook import reconstruct  # noqa: E402
from iqpfr.conditioned import finetune_source, stage2_trainer  # noqa: E402
from iqpfr.config import load_params, task_params, variant  # noqa: E402
from iqpfr.pipeline import _load_stack  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402
from iqpfr.train import load_stage1_model  # noqa: E402


def _hwc(x: torch.Tensor) -> np.ndarray:
    return x.permute(0, 2, 3, 1).numpy()


@torch.no_grad()
def ceiling(stage1_path: Path, testset: Path) -> dict:
    """CIEDE2000 to the pristine face and colourfulness of the pristine faces and the GTs of a colour
    test set, as they are and reconstructed by stage I with the common codebook (lambda = 0)."""
    model, _ = load_stage1_model(stage1_path)
    model.eval()
    gt, _ = _load_stack(testset, "hq_file")
    clean, _ = _load_stack(testset, "oracle_file")
    out = {"n": len(gt)}
    for name, x in {"pristine": clean, "gt": gt}.items():
        rec = torch.cat([reconstruct(model, x[i:i + 64], 0.0) for i in range(0, len(x), 64)])
        for tag, im in {name: x, f"{name}_reconstructed": rec}.items():
            a, c = _hwc(im), _hwc(clean)
            out[f"{tag}_ciede2000_oracle"] = float(np.mean([truequality.ciede2000(u, v) for u, v in zip(a, c)]))
            out[f"{tag}_colourfulness"] = float(np.mean([colour.colourfulness(u) for u in a]))
    return out


def snapshot_rows(params, rows: dict[str, str], steps: int, at: list[int], tmp: Path, progress=print,
                  true_scores: bool = False, scores: torch.Tensor | None = None, seed: int | None = None,
                  batch_size: int | None = None, lr: float | None = None, seconds: dict | None = None):
    """Train each row (name -> "main" or a variant name of the colour task's params) to `steps`, from
    where the pipeline starts it (`colour.finetune`),
    saving its checkpoint at every step in `at` as tmp/<k>/<name>.pt -> {(name, k): path}.
    `seed`: train with this stage-II seed instead of the params' (other batches, flips, LQ draws
    and score dropouts; the start is the same face row).
    `true_scores`: condition on the GTs' true colour quality instead of the prior's S (an oracle
    score that only the synthetic world has: what a prior that ranked colour perfectly would give);
    `scores`: condition on these scores (N,) in [0, 1] of the training GTs instead (another prior's S).
    `batch_size`, `lr`: train with these instead of the params' (a cheaper or faster recipe);
    `seconds`: filled with {(name, k): training seconds to step k}."""
    if true_scores and scores is not None:
        raise ValueError("true_scores and scores: one source of score bins at a time")
    paths = {}
    for name, which in rows.items():
        p = task_params(params, "colour")
        p = p if which == "main" else variant(p, which)
        s2 = replace(p.stage2, steps=steps, checkpoint_every=steps, log_every=max(steps // 10, 1),
                     seed=p.stage2.seed if seed is None else seed,
                     batch_size=batch_size or p.stage2.batch_size, lr=lr or p.stage2.lr)
        trainer = stage2_trainer(p.data, p.degrade, p.vqgan, p.transformer, s2, tmp / f"{name}.run.pt", progress,
                                 COLOUR, finetune_source(params, "colour", which))
        if true_scores:  # the trainer draws each GT's bin from `scores` (N,) in [0, 1], aligned with its images
            trainer.scores = torch.tensor(trainer.images.frame["true_quality"].to_numpy()).float()
        elif scores is not None:
            if scores.shape != trainer.scores.shape:
                raise ValueError(f"scores {tuple(scores.shape)} for {len(trainer.scores)} training GTs")
            trainer.scores = scores.float()
        t0 = time.time()
        for k in at:
            trainer.train(until=k)
            path = tmp / str(k) / f"{name}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            trainer.save(path)
            paths[name, k] = path
            if seconds is not None:
                seconds[name, k] = time.time() - t0
            progress(f"{name}: step {k} ({time.time() - t0:.0f} s)")
    return paths


def measured_models(params) -> list[str]:
    """The files this benchmark's figures depend on (paths in the project): the frozen stage I, the
    face rows the colour rows start from and the colour prior. Notebook 06 shows the figures only
    while they are the project's own (iqpfr.provenance)."""
    starts = [finetune_source(params, "colour", row) for row in ("main", params.colour.baseline)]
    return [str(COLOUR.stage1), *(str(p) for p in starts if p is not None), str(COLOUR.prior)]


def same_weights(a: Path, b: Path) -> bool:
    """Whether two stage-II checkpoints hold bit-identical EMA weights."""
    wa, wb = (torch.load(p, map_location="cpu", weights_only=True)["ema"] for p in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def evaluate_pair(main: Path, baseline: Path, tmp: Path, score: float, guidance: float,
                  adain: bool = COLOUR.adain, data: Path = COLOUR.data) -> dict:
    """`enhancement.run` of the colour task, as notebook 06 runs it, with Baseline+ `main` and the
    baseline `baseline` (stage-II checkpoints); `adain`: restore with AdaIN; `data`: the task's data
    root whose testset/ is measured (default: the pipeline's test set)."""
    models = tmp / "task"  # the colour task with its own data, prior and stage I, and this baseline
    (models / "variants" / "baseline").mkdir(parents=True, exist_ok=True)
    for link, target in {models / "prior": COLOUR.models / "prior",
                         models / "variants" / "baseline" / "restorer.pt": baseline}.items():
        link.unlink(missing_ok=True)
        link.symlink_to(target.resolve())
    return enhancement.run(replace(COLOUR, data=data, models=models, adain=adain), enhancement.COLOUR, main, "baseline",
                           score, sweep_count=32, grid_count=0, guidance=guidance)


def evaluate_snapshot(main: Path, baseline: Path, tmp: Path, score: float, guidance: float,
                      adain: bool = COLOUR.adain, data: Path = COLOUR.data) -> dict:
    """Notebook 06's measures of one snapshot pair (`evaluate_pair`): per-row means, the Baseline+ -
    baseline CIEDE2000 interval, the grayscale colourfulness ratio and the grayscale claim."""
    ev = evaluate_pair(main, baseline, tmp, score, guidance, adain, data)
    s = ev["summary"]
    c = ev["claims"]
    first = c[(c["a"] == "baseline_plus") & (c["b"] == "baseline") & (c["metric"] == "ciede2000_oracle")].iloc[0]
    gray = c[(c["a"] == "baseline_plus_gray") & (c["b"] == "gray_lq")].iloc[0]
    return {"baseline_ciede2000_oracle": s["baseline"]["ciede2000_oracle"],
            "baseline_plus_ciede2000_oracle": s["baseline_plus"]["ciede2000_oracle"],
            "lq_ciede2000_oracle": s["lq"]["ciede2000_oracle"],
            "diff": first["diff"], "low": first["low"], "high": first["high"], "verdict": first["verdict"],
            "baseline_plus_gray_ciede2000_oracle": s["baseline_plus_gray"]["ciede2000_oracle"],
            "gray_lq_ciede2000_oracle": s["gray_lq"]["ciede2000_oracle"],
            "gray_diff": gray["diff"], "gray_low": gray["low"], "gray_high": gray["high"], "gray_verdict": gray["verdict"],
            **enhancement.gray_regions(s),
            "baseline_plus_true_quality": s["baseline_plus"]["true_quality"],
            "spearman_S_vs_true_quality": ev["spearman_S_vs_true_quality"]}


def prior_scores(params, n: int, tmp: Path) -> torch.Tensor:
    """S (N,) of the colour world's training GTs from a colour prior trained as the pipeline trains
    its own, on n labelled images (benchmarks/colour_prior.py), min-max normalised over those GTs as
    the score stage normalises a single learned metric."""
    import colour_prior

    cp = task_params(params, "colour")
    x, q = colour_prior.labelled_images(params, n, tmp)
    net, log, _ = colour_prior.train(cp.prior, cp.prior.input_pool, x, q, colour_prior.held_out_splits())
    gts, frame = _load_stack(COLOUR.world / "train")
    raw = iqanet.predict(net, gts)
    print(f"prior on {n} labelled images: Spearman {log[-1]['spearman_val']:.3f} on held-out flaws, "
          f"{iqanet.spearman(raw, frame['true_quality'].to_numpy()):.3f} on the training GTs", flush=True)
    return torch.from_numpy((raw - raw.min()) / (raw.max() - raw.min()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--at", type=int, nargs="+", default=[200, 400, 600, 1000])
    ap.add_argument("--true-scores", action="store_true",
                    help="Baseline+ conditioned on the GTs' true colour quality instead of the prior's S")
    ap.add_argument("--prior-images", type=int, default=None,
                    help="Baseline+ conditioned on the S of a colour prior trained on this many labelled images")
    ap.add_argument("--batch-size", type=int, default=None, help="stage-II batch of both rows (default: the params')")
    ap.add_argument("--lr", type=float, default=None, help="stage-II learning rate of both rows (default: the params')")
    ap.add_argument("--out", default=None,
                    help="default: reports/metrics/colour_budget[_true_scores|_prior<N>].csv")
    args = ap.parse_args()
    if args.true_scores and args.prior_images:
        sys.exit("--true-scores and --prior-images: one source of score bins at a time")
    suffix = "_true_scores" if args.true_scores else f"_prior{args.prior_images}" if args.prior_images else ""
    out = Path(args.out or ROOT / f"reports/metrics/colour_budget{suffix}.csv")
    if sorted(args.at) != args.at or args.at[-1] > args.steps or args.at[0] < 1:
        sys.exit(f"--at must be increasing steps within 1..{args.steps}, got {args.at}")
    os.chdir(ROOT)  # the tasks' paths are relative to the repository
    runtime.configure()
    params = load_params(ROOT / "params.yaml")
    cp = task_params(params, "colour")
    cei = ceiling(COLOUR.stage1, COLOUR.testset / "pairs")
    print(json.dumps(cei, indent=1))
    ceiling_json = ROOT / "reports/metrics/colour_ceiling.json"
    ceiling_json.write_text(json.dumps(cei, indent=1) + "\n")

    def stamp(path: Path) -> None:  # iqpfr.provenance: what this run measured, for notebook 06
        provenance.write(path, cp.data, provenance.sections_of(cp), provenance.command("benchmarks/colour_budget.py", None),
                         models=measured_models(params), root=ROOT)

    stamp(ceiling_json)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        rows = {"baseline_plus": "main", "baseline": params.colour.baseline}
        scores = prior_scores(params, args.prior_images, tmp) if args.prior_images else None
        seconds: dict = {}
        paths = snapshot_rows(params, rows, args.steps, args.at, tmp, true_scores=args.true_scores, scores=scores,
                              batch_size=args.batch_size, lr=args.lr, seconds=seconds)
        own = cp.stage2.steps
        recipe = args.batch_size in (None, cp.stage2.batch_size) and args.lr in (None, cp.stage2.lr)
        if own in args.at and recipe and not args.true_scores and scores is None:  # a snapshot is the shorter run: checked on the pipeline's models
            same = (same_weights(paths["baseline_plus", own], COLOUR.stage2)
                    and same_weights(paths["baseline", own], COLOUR.variants / params.colour.baseline / "restorer.pt"))
            print(f"snapshot at step {own} equals the pipeline's {own}-step models: {same}")
        rows = []
        for k in args.at:
            r = evaluate_snapshot(paths["baseline_plus", k], paths["baseline", k], tmp, params.evaluation.score,
                                  cp.transformer.guidance)
            rows.append({"steps": k, "batch_size": args.batch_size or cp.stage2.batch_size, "lr": args.lr or cp.stage2.lr,
                         **{f"train_seconds_{name}": seconds[name, k] for name in ("baseline_plus", "baseline")}, **r})
            print(pd.DataFrame(rows).round(4).to_string(index=False))
    pd.DataFrame(rows).to_csv(out, index=False, float_format="%.6g")
    stamp(out)


if __name__ == "__main__":
    main()
