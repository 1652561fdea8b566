"""The evaluation stage: the main model, its variants and the inference ablations on every test
set, the S sweep, and the paper's claims checked against paired per-image differences.

Writes reports/eval/<set>/<row>.{csv,json} (per image / summary) and reports/eval/claims.csv;
reports/metrics/evaluate.json ({set: {row: means}}, for `dvc metrics diff`) and
reports/metrics/evaluate_s_sweep.csv (for `dvc plots`). Metric conventions: see `iqpfr.evaluate`.
"""
from __future__ import annotations

import time
from dataclasses import replace

import pandas as pd
import torch

from . import evaluate as ev
from . import quality
from .conditioned import BIN_CENTRES, STAGE2, VARIANTS, load_restorer, seed_checkpoint
from .config import DataConfig, EvaluationConfig, ScoringConfig, SeedsConfig, TransformerParams, guidance_by_row
from .iqanet import spearman
from .pipeline import METRICS, PRIOR, SCORES, TESTSET

# (claim, row a, row b, metric, better): "a is better than b on metric". Judges are added per run.
CLAIMS = [
    ("IQPFR restores higher prior quality than the baseline", "iqpfr", "baseline", "S", "higher"),
    ("IQPFR is closer to the pristine face than the baseline", "iqpfr", "baseline", "ssim_oracle", "higher"),
    ("IQPFR is more faithful to the GT than the baseline (PSNR)", "iqpfr", "baseline", "psnr_gt", "higher"),
    ("Plug-and-play: Baseline+ beats the baseline on prior quality", "baseline_plus", "baseline", "S", "higher"),
    ("Plug-and-play: Baseline+ is closer to the pristine face", "baseline_plus", "baseline", "ssim_oracle",
     "higher"),
    ("The quality loss raises prior quality", "iqpfr", "no_quality_loss", "S", "higher"),
    ("The quality loss keeps fidelity to the pristine face", "iqpfr", "no_quality_loss", "ssim_oracle",
     "higher"),
    ("HQ+ codes help: lambda as trained beats lambda = 0 (prior quality)", "iqpfr", "iqpfr_lambda0", "S", "higher"),
    ("HQ+ codes help: lambda as trained beats lambda = 0 (pristine face)", "iqpfr", "iqpfr_lambda0", "ssim_oracle",
     "higher"),
    ("Restoration exceeds the GT's own quality (SSIM to the pristine face)", "iqpfr", "gt", "ssim_oracle", "higher"),
    ("Continuous optimisation inflates the prior's score above IQPFR's", "continuous_latent", "iqpfr", "S", "higher"),
    ("Over-optimisation: the continuous output is further from the pristine face", "iqpfr", "continuous_latent",
     "ssim_oracle", "higher"),
]


def claims_table(tables: dict[str, pd.DataFrame], directions: dict[str, str]) -> pd.DataFrame:
    """Each claim with the paired mean difference (a - b), its bootstrap 95% interval and a verdict;
    claims whose rows or metrics are absent are left out. Held-out judges are checked for the
    first claim of each kind (IQPFR vs baseline, quality loss, over-optimisation)."""
    claims = list(CLAIMS)
    for judge, better in directions.items():
        if judge == "S":
            continue
        claims += [(f"Held-out {judge} agrees: IQPFR beats the baseline", "iqpfr", "baseline", judge, better),
                   (f"Held-out {judge} agrees: the quality loss helps", "iqpfr", "no_quality_loss", judge, better),
                   (f"Held-out {judge}: continuous optimisation is worse than IQPFR", "iqpfr", "continuous_latent",
                    judge, better)]
    rows = []
    for text, a, b, metric, better in claims:
        if a not in tables or b not in tables or metric not in tables[a] or metric not in tables[b]:
            continue
        d = ev.paired_difference(tables[a][metric].to_numpy(), tables[b][metric].to_numpy())
        rows.append({"claim": text, "a": a, "b": b, "metric": metric, "better": better, "mean_a": tables[a][metric].mean(),
                     "mean_b": tables[b][metric].mean(), "diff": d["mean"], "ci_low": d["low"], "ci_high": d["high"],
                     "verdict": ev.verdict(d, better)})
    return pd.DataFrame(rows)


def model_row(entry: ev.Entry) -> str | None:
    """The trained model behind a row: "iqpfr" for the main checkpoint, the variant's name for a
    variant's (so iqpfr_lambda0 -> iqpfr, continuous_latent -> continuous); None for lq and gt."""
    if entry.checkpoint is None:
        return None
    return "iqpfr" if entry.checkpoint == STAGE2 else entry.checkpoint.parent.name


def seed_entries(rows: list[ev.Entry], seed: int, seeded: list[str]) -> list[ev.Entry]:
    """The rows whose model was also trained with `seed` (`seeds.rows`), pointed at that run's
    checkpoint; reference rows (lq) are kept, rows of other models are left out."""
    out = []
    for e in rows:
        row = model_row(e)
        if row is None:
            out.append(e)
        elif row in seeded:
            out.append(replace(e, checkpoint=seed_checkpoint(row, seed)))
    return out


def merge_seed_claims(per_seed: dict[int, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim: the first seed's numbers, `diff_seed<s>` and `verdict_seed<s>` for every
    seed, and `verdict`: supported (or contradicted) only when every seed says so, else inconclusive.
    A claim missing for some seed (its rows were not retrained) keeps only the seeds it has."""
    seeds = list(per_seed)
    base = per_seed[seeds[0]].copy()
    for s in seeds:
        t = per_seed[s].set_index("claim")
        base[f"diff_seed{s}"] = base["claim"].map(t["diff"])
        base[f"verdict_seed{s}"] = base["claim"].map(t["verdict"])
    verdicts = base[[f"verdict_seed{s}" for s in seeds]]

    def combine(row) -> str:
        have = set(row.dropna())
        return have.pop() if len(have) == 1 and have <= {"supported", "contradicted"} else "inconclusive"

    base["seeds"] = verdicts.notna().sum(1)
    base["verdict"] = verdicts.apply(combine, axis=1)
    return base


ARROWS = {"higher": "↑", "lower": "↓"}


def comparison_table(summaries: dict[str, dict], directions: dict[str, str]) -> pd.DataFrame:
    """Rows x metric means of one set, each column name marked with its better direction (↑ / ↓)."""
    df = pd.DataFrame(summaries).T.drop(columns=["n"], errors="ignore")
    better = {**directions, **{c: "higher" for c in df.columns if c.startswith(("psnr", "ssim"))},
              **{c: "lower" for c in df.columns if c.startswith(("lpips", "identity", "fid"))}}
    return df.rename(columns={c: f"{c} {ARROWS[better[c]]}" for c in df.columns if c in better})


def prior_agreement(tables: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Per row, Spearman(prior score S, true quality = SSIM to the pristine oracle) over its images
    (rows without both columns are left out). Within a restorer's outputs this says whether the
    prior can still tell better outputs from worse ones, i.e. whether the outputs fool it."""
    return {row: spearman(t["S"].to_numpy(), t["ssim_oracle"].to_numpy())
            for row, t in tables.items() if {"S", "ssim_oracle"} <= set(t.columns)}


def _optional_metrics(data_cfg: DataConfig, evaluation: EvaluationConfig) -> tuple[object, object, bool, dict]:
    """LPIPS, identity and FID where their weights exist and they apply; the reasons where not."""
    unavailable, lpips_fn, identity = {}, None, None
    try:
        lpips_fn = ev.Lpips(evaluation.lpips_net)
    except quality.MissingWeightsError as err:
        unavailable["lpips"] = str(err)
    if not evaluation.identity:
        unavailable["identity"] = "switched off (evaluation.identity: false)"
    elif data_cfg.resolution < evaluation.identity_min_size:
        unavailable["identity"] = (f"not applicable: {data_cfg.resolution} px faces are below "
                                   f"{evaluation.identity_min_size} px, where dlib's descriptor is noise (SPEC 7)")
    else:
        identity = ev.Identity()
    fid = False
    if not evaluation.fid:
        unavailable["fid"] = "switched off (evaluation.fid: false)"
    elif not (quality.weights_home() / "hub" / "checkpoints" / ev.INCEPTION_FILE).exists():
        unavailable["fid"] = f"FID needs {ev.INCEPTION_FILE} in {quality.weights_home() / 'hub' / 'checkpoints'}"
    else:
        fid = True
    return lpips_fn, identity, fid, unavailable


def available_sets() -> list[str]:
    """Names of the sets the testset stage wrote ("pairs" first), from their manifests."""
    names = sorted(p.parent.name for p in TESTSET.glob("*/manifest.csv"))
    return sorted(names, key=lambda n: n != "pairs")


@torch.no_grad()
def s_sweep(models: dict, images: dict, judges: ev.Judges, count: int) -> pd.DataFrame:
    """Each score-conditioned model restores the first `count` pairs at the ten bin centres:
    mean prior score and fidelity per (row, S)."""
    lq = images["lq"][:count]
    rows = []
    for name, model in models.items():
        for s in BIN_CENTRES:
            out = torch.cat([model.restore(lq[i:i + 64], s) for i in range(0, len(lq), 64)])
            row = {"row": name, "S_requested": s, "S_output": float(judges.prior_score(out).mean())}
            for ref in ("gt", "oracle"):
                if ref in images:
                    fr = ev.full_reference(out, images[ref][:count], ref)
                    row.update({c: float(v) for c, v in fr.mean().items()})
            rows.append(row)
    return pd.DataFrame(rows)


def _load_models(rows: list[ev.Entry]) -> dict:
    """Each checkpoint of the comparison loaded once: {path: frozen QualityRestorer}."""
    return {e.checkpoint: load_restorer(e.checkpoint, guidance=e.guidance)[0] for e in rows if e.checkpoint is not None}


def _score_conditioned(rows: list[ev.Entry], models: dict) -> dict:
    """The rows whose model takes a score (the S sweep's subjects), each run as trained."""
    return {e.name: models[e.checkpoint] for e in rows if e.checkpoint is not None and e.hq_weight is None
            and not e.continuous and models[e.checkpoint].cfg.conditioning != "none"}


@torch.no_grad()
def _seed_claims(rows: list[ev.Entry], set_name: str, images: dict, judges: ev.Judges, evaluation: EvaluationConfig,
                 seed: int, references: dict[str, pd.DataFrame], progress=print) -> pd.DataFrame:
    """The claims on one set with the models of training seed `seed` (per-image tables written to
    reports/eval/<set>_seed<seed>/). The reference rows (lq, gt) do not depend on the seed: their
    tables from the main evaluation are reused."""
    models = _load_models(rows)
    outputs = {e.name: ev.restore_all(models[e.checkpoint], images["lq"], e, evaluation.score, evaluation.batch_size)
               for e in rows if e.checkpoint is not None}
    _, tables = ev.evaluate_set(f"{set_name}_seed{seed}", images, outputs, judges, progress=progress)
    return claims_table({**references, **tables}, judges.directions())


@torch.no_grad()
def run(data_cfg: DataConfig, scoring: ScoringConfig, evaluation: EvaluationConfig, variants: dict,
        seeds: SeedsConfig | None = None, progress=print, transformer: TransformerParams | None = None) -> dict:
    """The evaluation stage. Returns per set the summaries, per-image tables and the first
    `grid_count` images of every row (for figures); the S sweep and the claims on the first set,
    with a verdict per training seed (the main runs' stage-II seed, then `seeds.extra`). Each trained
    model restores with its transformer.guidance (`transformer`: the main model's section; None: 1.0)."""
    t0 = time.time()
    sets = available_sets()
    if not sets:
        raise FileNotFoundError(f"no test sets in {TESTSET}: run the testset stage (dvc repro testset)")
    judges = ev.Judges.load(SCORES / "norm_stats.json", PRIOR, evaluation.judges, evaluation.judge_size,
                            scoring.offline)
    lpips_fn, identity, fid, unavailable = _optional_metrics(data_cfg, evaluation)
    unavailable.update(judges.unavailable)
    guidance = guidance_by_row(transformer, variants) if transformer is not None else None
    rows = ev.entries(variants, evaluation.hq_weights, STAGE2, VARIANTS, guidance)
    models = _load_models(rows)
    result = {"summaries": {}, "tables": {}, "grids": {}, "unavailable": unavailable,
              "directions": judges.directions(), "rows": rows}
    first_images = None
    for set_name in sets:
        images = ev.load_set(TESTSET / set_name)
        first_images = first_images or images
        outputs = {"lq": images["lq"]}
        for e in rows[1:]:
            outputs[e.name] = ev.restore_all(models[e.checkpoint], images["lq"], e, evaluation.score, evaluation.batch_size)
        if "gt" in images:
            outputs["gt"] = images["gt"]
        summaries, tables = ev.evaluate_set(set_name, images, outputs, judges, lpips_fn, identity, fid, progress=progress)
        result["summaries"][set_name], result["tables"][set_name] = summaries, tables
        shown = {**outputs, **({"oracle": images["oracle"]} if "oracle" in images else {})}
        result["grids"][set_name] = {k: v[:evaluation.grid_count] for k, v in shown.items()}
    sweep = s_sweep(_score_conditioned(rows, models), first_images, judges, evaluation.sweep_count)
    sweep.to_csv(METRICS / "evaluate_s_sweep.csv", index=False, float_format="%.6g")
    result["sweep"] = sweep
    result["sweep_spearman"] = {n: spearman(g["S_requested"].to_numpy(), g["S_output"].to_numpy())
                                for n, g in sweep.groupby("row")}
    main_seed = load_restorer(STAGE2)[1]["train_config"]["seed"]
    per_seed = {main_seed: claims_table(result["tables"][sets[0]], judges.directions())}
    for seed in (seeds.extra if seeds is not None else []):
        refs = {r: t for r, t in result["tables"][sets[0]].items() if r in ("lq", "gt")}
        per_seed[seed] = _seed_claims(seed_entries(rows, seed, seeds.rows), sets[0], first_images, judges,
                                      evaluation, seed, refs, progress)
    result["claims_per_seed"] = per_seed
    result["claims"] = merge_seed_claims(per_seed)
    agree = prior_agreement(result["tables"][sets[0]])
    restorers = [e.name for e in rows[1:] if e.name in agree]
    result["prior_spearman_by_row"] = agree
    result["claims"].to_csv(ev.EVAL / "claims.csv", index=False, float_format="%.6g")
    result["seconds"] = time.time() - t0
    ev.write_json(METRICS / "evaluate.json", {**result["summaries"], "unavailable": unavailable,
                                              "sweep_spearman": result["sweep_spearman"],
                                              "prior_spearman_by_row": agree,
                                              "prior_spearman_on_outputs": min((agree[r] for r in restorers), default=None),
                                              "seconds": result["seconds"]})
    return result
