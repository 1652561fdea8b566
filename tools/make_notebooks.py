"""Write the source notebooks (clean, no outputs) from the cell lists below.

The notebooks are the teaching surface; keeping their source here as plain text makes diffs
readable. Run `python tools/make_notebooks.py` after editing, then commit both.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NB01 = [
    ("md", """# 01 · Scoring the data set with an image quality prior

Face restorers learn to imitate their ground-truth (GT) images. But GT sets are not uniformly
good: scored by no-reference image quality assessment (NR-IQA), most FFHQ faces sit around 0.7-0.8
on a 0-1 scale and only a few near 0.9+. A model that imitates GT converges to the **mean GT
quality**: the data caps the result. IQPFR's answer is an **image quality prior (IQP)**: score
every GT with NR-IQA models, then (stage I) learn an extra *HQ+* codebook only from the GTs above a
threshold and (stage II) condition the restorer on the score so that a high score can be asked for
at test time.

This notebook builds the prior's foundation: it scores every training GT, normalises the scores,
and checks how well they track quality. On the default profile the GTs come from a procedural face
world where **true quality is known**, so the prior can be validated directly, which no real data
set allows."""),
    ("code", """# Parameters: injected by `python -m iqpfr.notebook` from params.yaml (one dict per section).
data = {}
scoring = {}""", ["parameters"]),
    ("code", """import json, time
from pathlib import Path

import numpy as np
import pandas as pd
from IPython.display import display

from iqpfr import pipeline, plots
from iqpfr.data import load_png, read_manifest
from iqpfr.notebook import sections

cfg = sections(data=data, scoring=scoring)
data_cfg, scoring_cfg = cfg["data"], cfg["scoring"]
FIG = pipeline.FIGURES / "01"
print(f"source={data_cfg.source}, resolution={data_cfg.resolution}px, ensemble={scoring_cfg.metrics}, "
      f"reference metrics={scoring_cfg.reference_metrics}")"""),
    ("md", """## 1 · Ground truth with known quality

Each synthetic GT is a pristine render $x^\\ast$ passed through a recorded *capture* degradation
(a mixture of blur, noise and JPEG, or clean). Its **true quality** is a full-reference similarity
to the pristine oracle,

$$q(x_h) = \\operatorname{clip}_{[0,1]} \\mathrm{SSIM}_Y(x_h, x^\\ast),$$

SSIM on the luma channel with a Gaussian window ($\\sigma = 1.5$). The capture strength is chosen
per image so that $q$ follows an FFHQ-like distribution: a peak in the 0.8 bin, a tail down to low
quality, a minority of clean images. The oracle is stored apart; training never reads it."""),
    ("code", """train_manifest = read_manifest(pipeline.WORLD / "train")
if "true_quality" in train_manifest:
    picks = train_manifest.sort_values("true_quality").iloc[np.linspace(0, len(train_manifest) - 1, 6).astype(int)]
    imgs, titles = [], []
    for _, r in picks.iterrows():
        imgs += [load_png(pipeline.WORLD / "train" / r["oracle_file"]), load_png(pipeline.WORLD / "train" / r["file"])]
        titles += ["oracle", f"GT  q={r['true_quality']:.2f}"]
    plots.image_row(imgs, titles, FIG / "01_gt_vs_oracle.png")
    counts = np.histogram(train_manifest["true_quality"], bins=10, range=(0, 1))[0]
    display(pd.DataFrame({"bin": [f"[{b/10:.1f},{(b+1)/10:.1f})" for b in range(10)], "GTs": counts,
                          "fraction": (counts / counts.sum()).round(3)}).set_index("bin").T)
else:
    print("Folder source: no oracle, so true quality is unknown for these GTs.")"""),
    ("md", """## 2 · The learned NR-IQA prior

The prior in the paper ensembles pretrained learned metrics (TOPIQ-face, a MUSIQ trained on a
face IQA set, Q-Align). Their weights cannot be downloaded here, and the classical training-free
metrics fail at this image size: NIQE is built on 96 px blocks and does not rank blur, noise or
JPEG at 256 px; PIQE ranks single degradations but not mixtures. So the default profile trains a
**compact differentiable NR-IQA network inside the pipeline**, on images with known quality that
are never training GTs: a separately seeded labelled split (the analogue of a human-opinion IQA
data set). It is validated on a second split of the same kind and on a third whose degradations
(motion blur, down-up resizing, signal-dependent noise) it never saw: the second number tells
whether it learned *quality* or just the generator's labels."""),
    ("code", """prior_info = json.loads((pipeline.METRICS / "train_prior.json").read_text())
history = pd.read_csv(pipeline.METRICS / "train_prior_history.csv")
plots.training_history(history, FIG / "01_prior_training.png")
display(pd.Series(prior_info).to_frame("learned prior"))"""),
    ("md", """## 3 · Scoring and normalisation

Every metric $k$ scores every training GT; scores are min-max normalised over the training set
and flipped when lower is better, then averaged into the ensemble score (eq. 11):

$$S(x) = \\frac{1}{K} \\sum_k \\frac{s_k(x) - \\min s_k}{\\max s_k - \\min s_k}.$$

The statistics are saved beside the scores (`data/scores/norm_stats.json`) so that a score asked
for at test time means the same thing as a training score. Scores are cached by (image sha256,
metric, weights hash, resolution): a re-run scores only what changed."""),
    ("code", """t0 = time.time()
result = pipeline.score_dataset(data_cfg, scoring_cfg)
train, summary = result["tables"]["train"], result["summary"]
print(f"scored in {time.time() - t0:.1f} s; images computed this run: {summary['images_scored_this_run']}")
print("throughput (images/s):", {k: round(v, 1) for k, v in summary["throughput_images_per_s"].items()})
display(train.filter(regex="^(file|true_quality|raw_|norm_|S$|bin|gate)").head())"""),
    ("md", """## 4 · The distribution of quality (the paper's Figure 2)

On FFHQ the normalised scores peak at 0.8. The dashed line is the gate threshold $S_{thr}$:
stage I trains the HQ+ codebook only on GTs with $S > S_{thr}$ (gate $m = 1[S > S_{thr}]$)."""),
    ("code", """cols = {f"norm_{n}": f"{n} (normalised)" for n in scoring_cfg.metrics}
cols["S"] = "ensemble S"
if "true_quality" in train:
    cols["true_quality"] = "true quality (oracle)"
plots.score_histograms(train, cols, scoring_cfg.threshold, FIG / "01_score_histograms.png")
print(f"fraction of GTs with S > S_thr = {scoring_cfg.threshold}: {summary['fraction_above_threshold']:.3f}")
print(f"strict gate (top {scoring_cfg.strict_fraction:.0%}): S > {summary['strict_threshold']:.3f}, "
      f"fraction {summary['fraction_above_strict']:.3f}")
print("GTs per score bin (each bin feeds one score embedding in stage II):", summary["bin_counts"])"""),
    ("code", """plots.examples_per_bin(train, pipeline.WORLD / "train", "S", 4, FIG / "01_examples_per_bin.png");"""),
    ("md", """## 5 · Does the score track true quality?

Spearman rank correlation between each metric and true quality (signed so that +1 means perfect
agreement, whatever the metric's direction). `iqa_val` is the held-out labelled split,
`iqa_unseen` the split with unseen degradations, `world_train` the training GTs themselves.
NIQE and PIQE are computed on a bicubic upsample to `scoring.reference_size` px when the images are
smaller (NIQE refuses images under 96 px and needs many 96 px blocks to be meaningful); they are
reference metrics only, never part of the prior."""),
    ("code", """rows = {}
for key, value in summary.items():
    if key.startswith("spearman_") and not key.startswith("spearman_S_"):
        for set_name in ("world_train", "iqa_val", "iqa_unseen"):
            if key.endswith(set_name):
                rows.setdefault(key[len("spearman_"):-len(set_name) - 1], {})[set_name] = value
if rows:
    display(pd.DataFrame(rows).T.round(3))
    spearman = {(f"raw_{m}", s): v for m, d in rows.items() for s, v in d.items()}
    plots.scatter_vs_truth(result["reference"], {f"raw_{m}": m for m in rows}, spearman, FIG / "01_scores_vs_truth.png")
else:
    print("No labelled set (folder source): see the prior's ranking agreement above.")"""),
    ("md", """## 6 · Summary and timing

The metrics below go to `reports/metrics/score.json` (`dvc metrics show`). The wall time adds
up the stages of `dvc repro` so far, as each stage recorded it."""),
    ("code", """stage_seconds = {s: json.loads((pipeline.METRICS / f"{s}.json").read_text())["seconds"]
                 for s in ("world", "iqa_data", "train_prior", "testset")}
stage_seconds["score"] = summary["seconds"]
summary["stage_seconds"] = stage_seconds
summary["pipeline_seconds_so_far"] = sum(stage_seconds.values())
pipeline.write_metrics("score", summary)
display(pd.Series(stage_seconds).to_frame("seconds").T.round(1))
print(f"wall time of dvc repro so far: {summary['pipeline_seconds_so_far']:.0f} s")"""),
]


def build(cells) -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for cell in cells:
        kind, src = cell[0], cell[1]
        c = new_markdown_cell(src) if kind == "md" else new_code_cell(src)
        if len(cell) > 2:
            c.metadata["tags"] = cell[2]
        nb.cells.append(c)
    return nb


def main() -> None:
    root = Path(__file__).resolve().parent.parent / "notebooks"
    for name, cells in {"01_score_dataset.ipynb": NB01}.items():
        nbformat.write(build(cells), str(root / name))
        print(f"wrote notebooks/{name}")


if __name__ == "__main__":
    main()
