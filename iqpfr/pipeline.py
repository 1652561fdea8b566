"""The pipeline's stages as functions of their params sections (called by `iqpfr` CLI stages and
by the notebooks). Each function receives exactly the sections its DVC stage lists.

Layout (relative to the project root, the working folder of every stage):
    data/world/{train,holdout}/   training GTs (+ oracle/ for the synthetic world), manifests
    data/iqa/{train,val,unseen}/  labelled sets for the learned prior (synthetic source)
    data/iqa/{rank_train,rank_holdout}/  unlabelled real images for the ranking prior (folder source)
    data/testset/                 seeded LQ/HQ pairs and real LQ folders
    data/scores/                  per-image scores and the normalisation statistics
    models/prior/iqanet.pt        the learned NR-IQA
    reports/metrics/*.json        small metrics files (dvc metrics show)
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import atomic, data, iqanet, quality
from .task import FACE, Task
from .config import (CaptureConfig, DataConfig, DegradeConfig, HelperConfig, IqaConfig, PriorConfig, ScoringConfig,
                     TestsetConfig)
from .degrade import CaptureRanges, DegradeRanges
from .helper import helper_set
from .world import QualityDistribution

# the face task's layout (iqpfr.task.FACE); other tasks' stages take their Task
WORLD = FACE.world
IQA = FACE.iqa
TESTSET = FACE.testset
SCORES = FACE.scores
PRIOR = FACE.prior
METRICS = FACE.metrics
FIGURES = Path("reports/figures")
SCORE_CACHE = Path("cache/scores.jsonl")


def write_metrics(name: str, values: dict, task: Task = FACE) -> Path:
    """Write <task metrics>/<name>.json, e.g. reports/metrics/score.json (sorted keys, plain floats)."""
    path = task.metrics / f"{name}.json"
    atomic.write_text(path, json.dumps(values, indent=2, sort_keys=True, default=float) + "\n")
    return path


def _fresh(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def capture_ranges(capture: CaptureConfig) -> CaptureRanges:
    return CaptureRanges(capture.max_blur_sigma, capture.max_noise, capture.min_jpeg)


def gt_distribution(capture: CaptureConfig) -> QualityDistribution:
    return QualityDistribution(capture.clean_fraction, capture.peak, capture.peak_width,
                               capture.tail_fraction, capture.tail_low)


def degrade_ranges(degrade: DegradeConfig) -> DegradeRanges:
    return DegradeRanges(degrade.blur_kernel_size, tuple(degrade.blur_sigma), degrade.aniso_prob,
                         tuple(degrade.downsample), tuple(degrade.noise), tuple(degrade.jpeg),
                         degrade.colour_jitter_prob, degrade.gray_prob)


def _split_folder(folder: str, holdout: int) -> tuple[list[Path], list[Path]]:
    files = data.list_images(folder)
    if len(files) <= holdout:
        raise ValueError(f"{folder} holds {len(files)} files; data.num_holdout={holdout} leaves none to train on")
    return files[:-holdout], files[-holdout:]


def build_world(data_cfg: DataConfig, capture: CaptureConfig) -> dict:
    """Stage `world`: training and held-out GTs (synthetic renders or an ingested folder)."""
    t0 = time.time()
    out = {}
    if data_cfg.source == "synthetic":
        for split, n in (("train", data_cfg.num_train), ("holdout", data_cfg.num_holdout)):
            df = data.write_synthetic_set(_fresh(WORLD / split), split, n, data_cfg.seed, data_cfg.resolution,
                                          gt_distribution(capture), capture_ranges(capture), "train", data_cfg.workers)
            q = df["true_quality"].to_numpy()
            out[split] = {"count": len(df), "true_quality_mean": float(q.mean()),
                          "true_quality_bins": np.histogram(q, bins=10, range=(0, 1))[0].tolist()}
    else:
        train, holdout = _split_folder(data_cfg.folder, data_cfg.num_holdout)
        for split, files in (("train", train), ("holdout", holdout)):
            df, rejects = data.ingest_folder(data_cfg.folder, _fresh(WORLD / split), data_cfg.resolution,
                                             data_cfg.workers, files=files)
            out[split] = {"count": len(df), "rejected": len(rejects)}
    out["seconds"] = time.time() - t0
    write_metrics("world", out)
    return out


def build_iqa_sets(data_cfg: DataConfig, capture: CaptureConfig, iqa: IqaConfig) -> dict:
    """Stage `iqa_data`: data for the learned prior, never the training GTs.

    Synthetic: three separately seeded labelled splits with uniform true quality; `train` and
    `val` carry restorer-like artefacts on `iqa.restorer_fraction` of their images (so that
    restored faces cannot fool the prior), `unseen` uses the capture family the prior never
    trains on. Folder: the folder's images (held-out ones
    apart) for the ranking objective.
    """
    t0 = time.time()
    _fresh(IQA)
    out = {}
    if data_cfg.source == "synthetic":
        uniform = QualityDistribution(tail_low=capture.tail_low, uniform=True)
        for split, n, family in (("train", iqa.num_train, "train"), ("val", iqa.num_val, "train"),
                                 ("unseen", iqa.num_unseen, "unseen")):
            frac = iqa.restorer_fraction if family == "train" else 0.0
            df = data.write_synthetic_set(IQA / split, f"iqa_{split}", n, data_cfg.seed, data_cfg.resolution,
                                          uniform, capture_ranges(capture), family, data_cfg.workers, frac)
            out[split] = {"count": len(df), "family": family, "families": df["family"].value_counts().to_dict()}
    else:
        train, holdout = _split_folder(data_cfg.folder, data_cfg.num_holdout)
        for split, files in (("rank_train", train), ("rank_holdout", holdout)):
            df, _ = data.ingest_folder(data_cfg.folder, IQA / split, data_cfg.resolution, data_cfg.workers, files=files)
            out[split] = {"count": len(df)}
    out["seconds"] = time.time() - t0
    write_metrics("iqa_data", out)
    return out


def _load_stack(set_dir: Path, column: str = "file") -> tuple[torch.Tensor, pd.DataFrame]:
    df = data.read_manifest(set_dir)
    imgs = np.stack([data.load_png(set_dir / f) for f in df[column]])
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous(), df


def train_prior(data_cfg: DataConfig, iqa: IqaConfig, prior: PriorConfig, helper: HelperConfig | None = None,
                task: Task = FACE) -> dict:
    """Stage `train_prior`: fit the learned NR-IQA on the task's labelled sets and record its validation.
    With `helper` (the face task's stage; helper.steps > 0) the helper restorer's labelled outputs
    (stage `iqa_helper`, data/iqa_helper) join the training split."""
    t0 = time.time()
    torch.manual_seed(prior.seed)
    extra = None
    if data_cfg.source == "synthetic":
        net = iqanet.IqaNet(iqanet.IqaNetConfig(width=prior.width, mode="regression", input_pool=prior.input_pool))
        x, df = _load_stack(task.iqa / "train")
        evals = {}
        for split in ("val", "unseen"):
            xe, de = _load_stack(task.iqa / split)
            evals[split] = (xe, de["true_quality"].to_numpy())
        q = torch.tensor(df["true_quality"].to_numpy(), dtype=torch.float32)
        if helper is not None and helper.steps > 0:
            extra = helper_set()
        if extra is not None:
            x, q = torch.cat([x, extra[0]]), torch.cat([q, torch.tensor(extra[1], dtype=torch.float32)])
        history = iqanet.train_regression(net, x, q, prior.epochs, prior.batch_size, prior.lr, prior.seed, evals)
        result = {"mode": "regression", "spearman_val": history[-1]["spearman_val"],
                  "spearman_unseen": history[-1]["spearman_unseen"],
                  "spearman_train": iqanet.spearman(iqanet.predict(net, x), q.numpy())}
    else:
        net = iqanet.IqaNet(iqanet.IqaNetConfig(width=prior.width, mode="ranking", input_pool=prior.input_pool))
        x, _ = _load_stack(task.iqa / "rank_train")
        history = iqanet.train_ranking(net, x.permute(0, 2, 3, 1).numpy(), iqa.rank_levels, prior.epochs,
                                       prior.batch_size, prior.lr, prior.seed)
        xh, _ = _load_stack(task.iqa / "rank_holdout")
        agree = iqanet.ranking_agreement(net, xh.permute(0, 2, 3, 1).numpy(), iqa.rank_levels, prior.seed)
        result = {"mode": "ranking", **{f"rank_spearman_{k}": v for k, v in agree.items()}}
    result.update({"parameters": sum(p.numel() for p in net.parameters()), "epochs": prior.epochs,
                   "train_images": len(x), "resolution": data_cfg.resolution})
    if helper is not None:
        result["helper_images"] = 0 if extra is None else len(extra[1])
    result["sha256"] = iqanet.save(task.prior, net, result)  # no timings inside: a rerun writes the same bytes
    result["seconds"] = time.time() - t0
    task.metrics.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(history).to_csv(task.metrics / "train_prior_history.csv", index=False)
    write_metrics("train_prior", result, task)
    return result


def build_testset(data_cfg: DataConfig, capture: CaptureConfig, degrade: DegradeConfig, testset: TestsetConfig) -> dict:
    """Stage `testset`: seeded LQ/HQ pairs (synthetic with oracles, or from an HQ folder) and
    manifests of real LQ folders, with count checks."""
    t0 = time.time()
    # every folder is listed first: a missing one fails before the previous test set is removed
    hq_files = data.list_images(testset.hq_folder) if testset.hq_folder else None
    lq_files = {name: data.list_images(folder) for name, folder in testset.lq_folders.items()}
    _fresh(TESTSET)
    out = {}
    hq_rejects = None
    if testset.hq_folder:  # the ingest folder is temporary: its rejects are listed beside the pairs
        hq = TESTSET / "_hq_ingest"
        _, hq_rejects = data.ingest_folder(testset.hq_folder, hq, data_cfg.resolution, data_cfg.workers,
                                           files=hq_files, rejects_csv=TESTSET / "pairs" / "rejects.csv")
        extra = None
    else:
        hq = TESTSET / "_hq_render"
        df = data.write_synthetic_set(hq, "test", testset.num, data_cfg.seed, data_cfg.resolution,
                                      gt_distribution(capture), capture_ranges(capture), "train", data_cfg.workers)
        extra = df[["true_quality"]].copy()
        extra["oracle_file"] = [f"oracle/{Path(f).name}" for f in df["oracle_file"]]
    pairs = data.build_pairs(hq, TESTSET / "pairs", degrade_ranges(degrade), testset.seed, extra)
    if extra is not None:  # keep the oracles beside the pairs, then drop the render folder
        shutil.copytree(hq / "oracle", TESTSET / "pairs" / "oracle")
    shutil.rmtree(hq)
    data.check_count("pairs", pairs, testset.expected_counts.get("pairs", 0))
    out["pairs"] = {"count": len(pairs)}
    if hq_rejects is not None:
        out["pairs"]["rejected"] = len(hq_rejects)
    for name, folder in testset.lq_folders.items():
        df, rejects = data.ingest_folder(folder, TESTSET / name, data_cfg.resolution, data_cfg.workers, subdir="lq",
                                         files=lq_files[name])
        data.check_count(name, df, testset.expected_counts.get(name, 0))
        out[name] = {"count": len(df), "rejected": len(rejects)}
    out["seconds"] = time.time() - t0
    write_metrics("testset", out)
    return out


def _score_table(set_dir: Path, metrics: dict, scoring: ScoringConfig, cache, resolution: int,
                 rows: int | None = None, timing: dict | None = None) -> pd.DataFrame:
    """Raw scores of the first `rows` images of a set under each metric (columns raw_<name>)."""
    frame = data.read_manifest(set_dir)
    frame = frame.iloc[:rows] if rows else frame
    ds = data.ManifestDataset(set_dir, rows=frame)
    df = frame.copy()
    for name, m in metrics.items():
        t = time.time()
        df[f"raw_{name}"], computed = quality.score_images(
            ds, list(frame["sha256"]), m, scoring.batch_size, cache, resolution, f"{set_dir.name}: {name}")
        if timing is not None and computed:
            n, s = timing.get(name, (0, 0.0))
            timing[name] = (n + computed, s + time.time() - t)
    return df


def measure_throughput(metrics: dict, set_dir: Path, batch_size: int, count: int = 128) -> dict[str, float]:
    """Images per second of each metric on the first `count` images of a set (no cache; includes
    any upsampling the metric does; batch size as in scoring, or 1 where the metric needs it)."""
    ds = data.ManifestDataset(set_dir, rows=data.read_manifest(set_dir).iloc[:count])
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    out = {}
    with torch.no_grad():
        for name, m in metrics.items():
            bs = m.max_batch or batch_size
            m(x[:bs])  # warm-up
            t = time.perf_counter()
            for i in range(0, len(x), bs):
                m(x[i:i + bs])
            out[name] = len(x) / (time.perf_counter() - t)
    return out


def _signed_spearman(metric, df: pd.DataFrame, name: str) -> float:
    """Spearman of a metric's raw score with true quality, signed so that +1 = perfect agreement."""
    rho = iqanet.spearman(df[f"raw_{name}"], df["true_quality"])
    return -rho if metric.lower_better else rho


def default_device() -> str:
    """CUDA when present, else CPU (scoring and training share this choice)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def score_dataset(data_cfg: DataConfig, scoring: ScoringConfig, device: str | None = None, task: Task = FACE) -> dict:
    """Stage `score` (run by notebooks/01_score_dataset.ipynb).

    Scores the training and held-out GTs with the ensemble metrics, fits the normalisation on the
    training set, computes S, the gate and score bins, and validates the prior: Spearman with true
    quality on the labelled IQA splits (synthetic) and on the GTs, beside the reference metrics.
    Writes data/scores/{train,holdout}.csv and norm_stats.json; returns tables and a summary.
    """
    t0 = time.time()
    device = device or default_device()
    cache = quality.ScoreCache(SCORE_CACHE)
    metrics = {n: quality.make_metric(n, device, task.prior, scoring.offline) for n in scoring.metrics}
    timing: dict = {}
    tables = {s: _score_table(task.world / s, metrics, scoring, cache, data_cfg.resolution, timing=timing)
              for s in ("train", "holdout")}
    stats = quality.NormStats.fit({n: tables["train"][f"raw_{n}"].to_numpy() for n in metrics}, metrics,
                                  scoring.metrics)
    strict = float(np.quantile(stats.ensemble_score({n: tables["train"][f"raw_{n}"].to_numpy() for n in metrics}),
                               1 - scoring.strict_fraction))
    for df in tables.values():
        raw = {n: df[f"raw_{n}"].to_numpy() for n in metrics}
        for n in metrics:
            df[f"norm_{n}"] = stats.normalise(n, raw[n])
        df["S"] = stats.ensemble_score(raw)
        df["bin"] = quality.score_bin(df["S"].to_numpy())
        df["gate"] = (df["S"] > scoring.threshold).astype(int)
        df["gate_strict"] = (df["S"] > strict).astype(int)
    task.scores.mkdir(parents=True, exist_ok=True)
    for split, df in tables.items():
        df.to_csv(task.scores / f"{split}.csv", index=False)
    stats.save(task.scores / "norm_stats.json")
    atomic.write_text(task.scores / "gate.json", json.dumps({"threshold": scoring.threshold, "strict_threshold": strict,
                                                        "strict_fraction": scoring.strict_fraction}, indent=2))
    train = tables["train"]
    summary = {"count_train": len(train), "count_holdout": len(tables["holdout"]),
               "fraction_above_threshold": float(train["gate"].mean()), "threshold": scoring.threshold,
               "strict_threshold": strict, "fraction_above_strict": float(train["gate_strict"].mean()),
               "bin_counts": np.bincount(train["bin"], minlength=10).tolist()}
    references = {}
    for n in scoring.reference_metrics:
        references[n] = quality.make_metric(n, device, task.prior, scoring.offline, min_size=scoring.reference_size)
    ref_tables = {}
    if "true_quality" in train:
        summary["spearman_S_vs_true_quality_train"] = iqanet.spearman(train["S"], train["true_quality"])
        summary["true_quality_bin_counts"] = np.histogram(train["true_quality"], bins=10, range=(0, 1))[0].tolist()
        sets = {"world_train": task.world / "train", "iqa_val": task.iqa / "val", "iqa_unseen": task.iqa / "unseen"}
        for set_name, set_dir in sets.items():
            if not (set_dir / "manifest.csv").exists():
                continue
            df = _score_table(set_dir, {**metrics, **references}, scoring, cache, data_cfg.resolution,
                              rows=scoring.reference_count, timing=timing)
            ref_tables[set_name] = df
            for n, m in {**metrics, **references}.items():
                summary[f"spearman_{n}_{set_name}"] = _signed_spearman(m, df, n)
    summary["throughput_images_per_s"] = measure_throughput({**metrics, **references}, task.world / "train",
                                                            scoring.batch_size)
    summary["images_scored_this_run"] = {n: c for n, (c, _) in timing.items()}
    summary["seconds"] = time.time() - t0
    return {"tables": tables, "reference": ref_tables, "stats": stats, "summary": summary,
            "metrics": {**metrics, **references}}


def score_task(data_cfg: DataConfig, scoring: ScoringConfig, task: Task) -> dict:
    """Stage `score` of a task reported by its own notebook (faces score in notebook 01): the
    scores, gate and bins of `score_dataset`, and its summary as <task metrics>/score.json."""
    summary = score_dataset(data_cfg, scoring, task=task)["summary"]
    write_metrics("score", summary, task)
    return summary
