"""At what resolution should the colour task's learned prior look? Measured (notebook 06).

The colour task's prior (stage `colour_prior`) is the face prior's network and recipe trained on
the colour world's labelled splits, whose flaws are colour casts, fading and (de)saturation: smooth
over the face, unlike the face world's noise and JPEG blocking. `prior.input_pool` p makes the
network average p x p pixel blocks before its first convolution. For each p of --pools a prior is
trained exactly as the pipeline trains it (params.yaml with `colour.overrides`, only
`prior.input_pool` changed; same data, seed and schedule) and judged on the prior's own held-out
splits: `val` (the training flaws, fresh faces) and `unseen` (a hue rotation, a channel gamma
imbalance and posterised colour, which it never trains on). The test set is never read.

The row with the pipeline's p is compared with the trained `models/colour/prior/iqanet.pt` tensor by
tensor (`matches_pipeline`), so the table is the pipeline's own. Each row also says how well the
prior ranks what stage II reads it for: the colour world's training GTs (`spearman_train_gts`,
Spearman between the prior's output and their true quality; the prior never trains on them).

--train-images trains on other numbers of labelled images: the first N of the pipeline's split,
or, beyond it, more images rendered as the `colour_world` stage renders them (the same seed and
quality distribution; the first images are the pipeline's, checked).

    python benchmarks/colour_prior.py        # after dvc repro colour_world; about 4 minutes on 2 cores
    python benchmarks/colour_prior.py --pools 2 --train-images 700 1400 2800 --out reports/metrics/colour_prior_data.csv

Writes reports/metrics/colour_prior.csv (one row per p and image count).
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import colour, iqanet, provenance, runtime, safeload  # noqa: E402
from iqpfr.config import load_params, task_params  # noqa: E402
from iqpfr.pipeline import _load_stack  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402
from iqpfr.world import QualityDistribution  # noqa: E402


def train(prior, pool: int, x: torch.Tensor, q: torch.Tensor, evals: dict) -> tuple[iqanet.IqaNet, list[dict], float]:
    """The colour prior as `pipeline.train_prior` trains it, with `input_pool` = pool: (net, log, seconds)."""
    torch.manual_seed(prior.seed)
    net = iqanet.IqaNet(iqanet.IqaNetConfig(width=prior.width, mode="regression", input_pool=pool))
    t0 = time.perf_counter()
    log = iqanet.train_regression(net, x, q, prior.epochs, prior.batch_size, prior.lr, prior.seed, evals,
                                  log=lambda line: None)
    return net, log, time.perf_counter() - t0


def scoring_rate(net: iqanet.IqaNet, x: torch.Tensor, repeats: int = 3) -> float:
    """Images per second of `iqanet.predict` on x (N, 3, H, W): the median of `repeats` passes after
    one untimed warm-up pass."""
    iqanet.predict(net, x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        iqanet.predict(net, x)
        times.append(time.perf_counter() - t0)
    return len(x) / float(np.median(times))


def same_weights(net: iqanet.IqaNet, path: Path) -> bool | None:
    """Whether `net` holds exactly the weights of the checkpoint at `path` (None: no checkpoint)."""
    if not path.exists():
        return None
    saved, _ = iqanet.load(path)
    return safeload.tensor_digest(net.state_dict()) == safeload.tensor_digest(saved.state_dict())


def held_out_splits() -> dict[str, tuple[torch.Tensor, np.ndarray]]:
    """The colour prior's held-out labelled splits: {"val", "unseen"} -> (images (N, 3, R, R) in
    [0,1], true qualities (N,)), as `train` judges a prior on them."""
    out = {}
    for split in ("val", "unseen"):
        x, frame = _load_stack(COLOUR.iqa / split)
        out[split] = (x, frame["true_quality"].to_numpy())
    return out


def labelled_images(params, n: int, tmp: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour prior's first n labelled training images (N, 3, R, R) in [0,1] and their true
    qualities (N,): the pipeline's split, and beyond its size more images rendered into tmp as
    `colour.build_sets` renders that split (its first images equal the pipeline's: checked)."""
    cp = task_params(params, "colour")
    x, df = _load_stack(COLOUR.iqa / "train")
    if n > len(x):
        uniform = QualityDistribution(tail_low=params.colour.gts.tail_low, uniform=True)
        colour.write_set(tmp / f"iqa_train_{n}", "iqa_train", n, cp.data.seed, cp.data.resolution, uniform, "train",
                         cp.data.workers)
        more, df = _load_stack(tmp / f"iqa_train_{n}")
        if not torch.equal(more[:len(x)], x):
            raise RuntimeError("the rendered labelled images differ from the pipeline's: rebuild colour_world first")
        x = more
    return x[:n], torch.tensor(df["true_quality"].to_numpy()[:n], dtype=torch.float32)


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4], help="the input_pool values to train")
    ap.add_argument("--train-images", type=int, nargs="+", default=None,
                    help="numbers of labelled training images (default: the pipeline's iqa.num_train)")
    ap.add_argument("--root", default=str(ROOT), help="the project whose params, data and prior are used")
    ap.add_argument("--out", default=None, help="default: ROOT/reports/metrics/colour_prior.csv")
    args = ap.parse_args(argv)
    root = Path(args.root).resolve()
    out = Path(args.out).resolve() if args.out else root / "reports/metrics/colour_prior.csv"
    os.chdir(root)  # the tasks' paths are relative to the project
    runtime.configure()
    params = load_params(root / "params.yaml")
    cp = task_params(params, "colour")
    prior, own = cp.prior, cp.iqa.num_train
    counts = args.train_images or [own]
    if min(counts) < prior.batch_size:
        sys.exit(f"--train-images: at least one batch ({prior.batch_size}), got {counts}")
    evals = held_out_splits()
    gts, gdf = _load_stack(COLOUR.world / "train")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for n, pool in itertools.product(sorted(counts), args.pools):
            x, q = labelled_images(params, n, Path(d))
            net, log, seconds = train(prior, pool, x, q, evals)
            pipeline = pool == prior.input_pool and n == own
            rows.append({"input_pool": pool, "resolution_seen": x.shape[-1] // pool, "train_images": n,
                         "pipeline": pipeline, "spearman_val": log[-1]["spearman_val"],
                         "spearman_unseen": log[-1]["spearman_unseen"],
                         "spearman_train_gts": iqanet.spearman(iqanet.predict(net, gts), gdf["true_quality"].to_numpy()),
                         "best_epoch_val": int(np.argmax([r["spearman_val"] for r in log])) + 1,
                         "train_seconds": seconds, "score_images_per_s": scoring_rate(net, evals["val"][0]),
                         "matches_pipeline": same_weights(net, COLOUR.prior) if pipeline else None})
            print(f"input_pool {pool}, {n} images: Spearman val {rows[-1]['spearman_val']:.3f}, unseen "
                  f"{rows[-1]['spearman_unseen']:.3f}, training GTs {rows[-1]['spearman_train_gts']:.3f}, "
                  f"{seconds:.0f} s to train", flush=True)
    table = pd.DataFrame(rows)
    print(f"the colour prior ({gts.shape[-1]} px, {prior.epochs} epochs) by input_pool and labelled images:")
    print(table.round(3).to_string(index=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    provenance.write(out, cp.data, provenance.sections_of(cp), provenance.command("benchmarks/colour_prior.py", argv))
    return table


if __name__ == "__main__":
    main()
