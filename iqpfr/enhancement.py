"""Evaluation of an enhancement task (underwater, colour): rows of outputs on the task's seeded
test sets, measured against the clean images the synthetic world rendered and against the GTs.

A row is a name, the test set it reads and a function of that set's (LQ, GT) batches: the input
itself, a classical method, a trained model at the evaluation score S, or the GT. Each task
names its rows, its per-image metrics and its claims (`UNDERWATER`, `COLOUR` below); `run`
measures every row, bootstraps the claims (paired, 95%, as in notebook 04) and sweeps S for the
main row. The prior's S is the task's learned prior, normalised with its training statistics.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from . import colour, evaluate, quality, truequality, uwmetrics
from .conditioned import BIN_CENTRES, load_restorer
from .iqanet import spearman
from .pipeline import _load_stack
from .restore import INFERENCE_MEMORY_FORMAT
from .task import Task
from .transformer import NUM_BINS, score_to_bin
from .transformer import adain as transformer_adain

Metric = Callable[[np.ndarray, np.ndarray, np.ndarray], float]  # (output, clean, GT) (H, W, 3) in [0,1]


@dataclass(frozen=True)
class Spec:
    """What a task's evaluation measures: rows (name, test set, kind), metrics, claims. Metrics
    named in `needs_clean` compare with the clean image and are NaN on sets without one (real
    data such as UIEB); the others use the output and the GT only. The claims on clean-image
    metrics are then not measurable; `gt_claims` are measured instead, when no test set has clean
    images (real GTs, e.g. CelebA-Test: the GT is the best reference there is)."""

    rows: list[tuple[str, str, str]]  # kind: "input" | "gt" | "classical" | "main" | "baseline"
    metrics: dict[str, Metric]
    needs_clean: frozenset[str]
    directions: dict[str, str]  # metric -> "higher" | "lower" (is better); S is added
    claims: list[tuple[str, str, str, str]]  # (claim, row a, row b, metric)
    sweep_set: str = "pairs"
    gt_claims: tuple[tuple[str, str, str, str], ...] = ()  # (as claims) measured only where no set has clean images


UNDERWATER = Spec(
    rows=[("lq", "pairs", "input"), ("classical", "pairs", "classical"), ("baseline", "pairs", "baseline"),
          ("iqpfr", "pairs", "main"), ("reference", "pairs", "gt")],
    metrics={"psnr_clean": lambda o, c, g: evaluate.psnr(o, c), "ssim_clean": lambda o, c, g: truequality.luma(o, c),
             "ciede2000_clean": lambda o, c, g: truequality.ciede2000(o, c),
             "true_quality": lambda o, c, g: truequality.colour(o, c),
             "psnr_reference": lambda o, c, g: evaluate.psnr(o, g), "ssim_reference": lambda o, c, g: truequality.luma(o, g),
             "uciqe": lambda o, c, g: uwmetrics.uciqe(o), "uiqm": lambda o, c, g: uwmetrics.uiqm(o)},
    needs_clean=frozenset({"psnr_clean", "ssim_clean", "ciede2000_clean", "true_quality"}),
    directions={"psnr_clean": "higher", "ssim_clean": "higher", "ciede2000_clean": "lower", "true_quality": "higher",
                "psnr_reference": "higher", "ssim_reference": "higher", "uciqe": "higher", "uiqm": "higher"},
    claims=[
        ("IQPFR is closer to the clean scene than the raw input (true quality)", "iqpfr", "lq", "true_quality"),
        ("IQPFR's colours are closer to the clean scene than the raw input's", "iqpfr", "lq", "ciede2000_clean"),
        ("IQPFR beats the unconditioned baseline (true quality)", "iqpfr", "baseline", "true_quality"),
        ("IQPFR's colours beat the unconditioned baseline's", "iqpfr", "baseline", "ciede2000_clean"),
        ("IQPFR beats the classical method (true quality)", "iqpfr", "classical", "true_quality"),
        ("IQPFR exceeds the references' own true quality", "iqpfr", "reference", "true_quality"),
    ],
    gt_claims=(  # UIEB (paper profile): no clean scene; the references and a no-reference judge remain
        ("IQPFR is closer to the references than the raw input (PSNR)", "iqpfr", "lq", "psnr_reference"),
        ("IQPFR is closer to the references than the raw input (SSIM)", "iqpfr", "lq", "ssim_reference"),
        ("IQPFR beats the unconditioned baseline (PSNR to the references)", "iqpfr", "baseline", "psnr_reference"),
        ("IQPFR beats the classical method (PSNR to the references)", "iqpfr", "classical", "psnr_reference"),
        ("IQPFR exceeds the references by UCIQE (a no-reference judge)", "iqpfr", "reference", "uciqe"),
    ))

COLOUR = Spec(
    rows=[("lq", "pairs", "input"), ("gray_lq", "gray", "input"), ("baseline", "pairs", "baseline"),
          ("baseline_plus", "pairs", "main"), ("baseline_gray", "gray", "baseline"),
          ("baseline_plus_gray", "gray", "main"), ("gt", "pairs", "gt")],
    metrics={"ciede2000_oracle": lambda o, c, g: truequality.ciede2000(o, c),
             "ciede2000_gt": lambda o, c, g: truequality.ciede2000(o, g),
             "colourfulness": lambda o, c, g: colour.colourfulness(o),
             "chroma_centre": lambda o, c, g: colour.region_chroma(o)["centre"],  # face and hair
             "chroma_border": lambda o, c, g: colour.region_chroma(o)["border"],  # background and clothes
             "ciede2000_oracle_centre": lambda o, c, g: colour.region_ciede2000(o, c)["centre"],
             "ciede2000_oracle_border": lambda o, c, g: colour.region_ciede2000(o, c)["border"],
             "true_quality": lambda o, c, g: truequality.colour(o, c),
             "psnr_gt": lambda o, c, g: evaluate.psnr(o, g), "ssim_gt": lambda o, c, g: truequality.luma(o, g)},
    needs_clean=frozenset({"ciede2000_oracle", "ciede2000_oracle_centre", "ciede2000_oracle_border", "true_quality"}),
    directions={"ciede2000_oracle": "lower", "ciede2000_gt": "lower", "colourfulness": "higher",
                "chroma_centre": "higher", "chroma_border": "higher",
                "ciede2000_oracle_centre": "lower", "ciede2000_oracle_border": "lower",
                "true_quality": "higher", "psnr_gt": "higher", "ssim_gt": "higher"},
    claims=[
        ("Baseline+ (S = 0.95) is closer in colour to the pristine face than the baseline", "baseline_plus", "baseline",
         "ciede2000_oracle"),
        ("Baseline+ is closer to the pristine face than the baseline (true quality)", "baseline_plus", "baseline",
         "true_quality"),
        ("Baseline+ restores colour: closer to the pristine face than its LQ input", "baseline_plus", "lq",
         "ciede2000_oracle"),
        ("Grayscale inputs are colourised: closer to the pristine face than the gray input", "baseline_plus_gray",
         "gray_lq", "ciede2000_oracle"),
        ("Baseline+ colourises better than the baseline", "baseline_plus_gray", "baseline_gray", "ciede2000_oracle"),
        ("Baseline+ exceeds the GTs' own colour quality", "baseline_plus", "gt", "ciede2000_oracle"),
    ],
    gt_claims=(  # a folder of real test GTs (colour.test_hq_folder): no pristine faces, the GT is the reference
        ("Baseline+ (S = 0.95) is closer in colour to the GT than the baseline", "baseline_plus", "baseline",
         "ciede2000_gt"),
        ("Baseline+ restores colour: closer to the GT than its LQ input", "baseline_plus", "lq", "ciede2000_gt"),
        ("Grayscale inputs are colourised: closer to the GT than the gray input", "baseline_plus_gray", "gray_lq",
         "ciede2000_gt"),
        ("Baseline+ colourises better than the baseline (CIEDE2000 to the GT)", "baseline_plus_gray", "baseline_gray",
         "ciede2000_gt"),
    ))


def gray_regions(summary: dict) -> dict[str, float]:
    """What Baseline+ gives gray inputs, from `run`'s summary of the COLOUR rows: how much of the
    GTs' colour (its colourfulness, and its chroma in the centre (face, hair) and the border
    (background, clothes), each divided by the GTs'; 1 = as colourful as the GTs), and how right it
    is: its CIEDE2000 to the pristine faces minus the gray input's, per region (< 0: closer)."""
    out, gt, lq = summary["baseline_plus_gray"], summary["gt"], summary["gray_lq"]
    return {"gray_colourfulness_ratio_to_gt": out["colourfulness"] / gt["colourfulness"],
            **{f"gray_chroma_ratio_{r}": out[f"chroma_{r}"] / gt[f"chroma_{r}"] for r in ("centre", "border")},
            **{f"gray_ciede2000_minus_input_{r}": out[f"ciede2000_oracle_{r}"] - lq[f"ciede2000_oracle_{r}"]
               for r in ("centre", "border")}}


def classical(x: torch.Tensor) -> torch.Tensor:
    """The classical baseline (gray-world + CLAHE) on a batch (N, 3, R, R) in [0,1]."""
    out = [uwmetrics.classical_enhance(im) for im in x.permute(0, 2, 3, 1).numpy()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous()


@torch.no_grad()
def sweep(model, lq: torch.Tensor, scores, adain: bool, batch: int = 64) -> dict[float, torch.Tensor]:
    """Restore LQ images (N, 3, R, R) in [0,1] at each requested quality S with the model's own
    guidance, with or without AdaIN (the task's `adain`) -> {S: (N, 3, R, R)}.

    Each batch goes through the operations of `model.restore(x, S, use_adain=adain)` for every S, so
    the images are the same bit for bit (a test checks it), but what does not depend on S is computed
    once per batch instead of once per S: the encoding E(x) and, with guidance w != 1, the "no score"
    logits. With the generator and one Transformer pass left per S, a 10-point sweep at w = 2 costs
    about 0.6 of ten restores."""
    w = model.guidance
    out: dict[float, list[torch.Tensor]] = {s: [] for s in scores}
    for i in range(0, len(lq), batch):
        z = model.encoder(lq[i:i + batch] * 2 - 1)  # (b, D, r, r)
        if w != 1.0:
            if not model.cfg.null_bin:
                raise ValueError(f"guidance {w} needs a model trained with score dropout (no 'no score' bin)")
            none = torch.full((len(z),), NUM_BINS, dtype=torch.long)
            uc, uh = model.transformer(model.transformer.condition(z, none), none)  # (b, T, K) each
        for s in scores:
            bins = score_to_bin(torch.full((len(z),), float(s)))
            z_l = model.transformer.condition(z, bins)
            lc, lh = model.transformer(z_l, bins)
            if w != 1.0:
                lc, lh = uc + w * (lc - uc), uh + w * (lh - uh)
            z_hat = model.codes(lc.argmax(-1), lh.argmax(-1))
            out[s].append(model.decode(transformer_adain(z_hat, z_l) if adain else z_hat))
    return {s: torch.cat(parts) for s, parts in out.items()}


def measure(x: torch.Tensor, clean: torch.Tensor | None, gt: torch.Tensor, spec: Spec,
            prior_score: Callable[[torch.Tensor], np.ndarray]) -> pd.DataFrame:
    """Per-image table of a row's images (N, 3, R, R) in [0,1]: every metric of `spec` (NaN for
    the clean-image metrics when `clean` is None), and the prior's S."""
    o, g = (t.permute(0, 2, 3, 1).numpy() for t in (x, gt))
    c = clean.permute(0, 2, 3, 1).numpy() if clean is not None else [None] * len(o)
    cols = {name: [np.nan if (name in spec.needs_clean and b is None) else fn(a, b, h) for a, b, h in zip(o, c, g)]
            for name, fn in spec.metrics.items()}
    return pd.DataFrame({**cols, "S": prior_score(x)})


@torch.no_grad()
def run(task: Task, spec: Spec, main: str, baseline: str, score: float = 0.95, sweep_count: int = 64,
        grid_count: int = 6, guidance: float = 1.0) -> dict:
    """Evaluate every row of `spec` on the task's test sets; the S sweep of the main model
    (`main`: a checkpoint path, restoring with `guidance`, the task's transformer.guidance); the
    claims. `baseline` names the variant row "baseline". Trained rows restore with AdaIN as the
    task does (`task.adain`)."""
    t0 = time.time()
    stats = quality.NormStats.load(task.scores / "norm_stats.json")
    prior = {n: quality.make_metric(n, "cpu", task.prior) for n in stats.ensemble}

    def prior_score(x: torch.Tensor) -> np.ndarray:
        return stats.ensemble_score({n: torch.cat([m(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy()
                                     for n, m in prior.items()})

    sets = {}
    for s in {r[1] for r in spec.rows}:
        d = task.testset / s
        lq, frame = _load_stack(d, "file")
        clean = _load_stack(d, "oracle_file")[0] if "oracle_file" in frame else None  # real sets have none
        sets[s] = (lq, _load_stack(d, "hq_file")[0], clean)
    models = {"main": load_restorer(main, task.stage1, guidance=guidance)[0],
              "baseline": load_restorer(task.variants / baseline / "restorer.pt", task.stage1)[0]}
    for m in models.values():  # fp32 in NHWC, as `iqpfr restore` runs it: the same codes, 1.3x faster here
        m.to(memory_format=INFERENCE_MEMORY_FORMAT)

    def nhwc(x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=INFERENCE_MEMORY_FORMAT)

    images = {}
    for name, s, kind in spec.rows:
        lq, gt, _ = sets[s]
        images[name] = (lq if kind == "input" else gt if kind == "gt" else classical(lq) if kind == "classical"
                        else sweep(models[kind], nhwc(lq), [score], task.adain)[score])
    tables = {name: measure(images[name], sets[s][2], sets[s][1], spec, prior_score) for name, s, _ in spec.rows}
    summary = {row: evaluate.summarise(t) for row, t in tables.items()}
    directions = {**spec.directions, "S": "higher"}
    claims = []
    without_clean = all(clean is None for _, _, clean in sets.values())
    for text, a, b, metric in [*spec.claims, *(spec.gt_claims if without_clean else ())]:
        if tables[a][metric].isna().all():
            continue  # a clean-image claim on a set without clean images: not measurable
        d = evaluate.paired_difference(tables[a][metric].to_numpy(), tables[b][metric].to_numpy())
        claims.append({"claim": text, "a": a, "b": b, "metric": metric, "mean_a": summary[a][metric],
                       "mean_b": summary[b][metric], "diff": d["mean"], "low": d["low"], "high": d["high"],
                       "verdict": evaluate.verdict(d, directions[metric])})
    lq, _, clean = sets[spec.sweep_set]
    swept = sweep(models["main"], nhwc(lq[:sweep_count]), BIN_CENTRES, task.adain)
    sweep_tq = ([float(task.true_quality(swept[s], clean[:sweep_count]).mean()) for s in BIN_CENTRES]
                if clean is not None else [float("nan")] * len(BIN_CENTRES))
    sweep_s = [float(prior_score(swept[s]).mean()) for s in BIN_CENTRES]
    grid = {name: images[name][:grid_count] for name, _, _ in spec.rows}
    if clean is not None:
        grid["clean"] = clean[:grid_count]
    claims = pd.DataFrame(claims, columns=["claim", "a", "b", "metric", "mean_a", "mean_b", "diff", "low", "high", "verdict"])
    return {"tables": tables, "summary": summary, "claims": claims, "grid": grid,
            "sweep": {"S": list(BIN_CENTRES), "true_quality": sweep_tq, "S_output": sweep_s},
            "spearman_S_vs_output_score": spearman(BIN_CENTRES, sweep_s),
            "spearman_S_vs_true_quality": spearman(BIN_CENTRES, sweep_tq), "seconds": time.time() - t0}
