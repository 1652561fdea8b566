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
tensor (`matches_pipeline`), so the table is the pipeline's own.

    python benchmarks/colour_prior.py        # after dvc repro colour_world; about 4 minutes on 2 cores

Writes reports/metrics/colour_prior.csv (one row per p).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import iqanet, runtime, safeload  # noqa: E402
from iqpfr.config import load_params, task_params  # noqa: E402
from iqpfr.pipeline import _load_stack  # noqa: E402
from iqpfr.task import COLOUR  # noqa: E402


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


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pools", type=int, nargs="+", default=[1, 2, 4], help="the input_pool values to train")
    ap.add_argument("--out", default=str(ROOT / "reports/metrics/colour_prior.csv"))
    args = ap.parse_args(argv)
    runtime.configure()
    prior = task_params(load_params(ROOT / "params.yaml"), "colour").prior
    x, df = _load_stack(COLOUR.iqa / "train")
    q = torch.tensor(df["true_quality"].to_numpy(), dtype=torch.float32)
    evals = {}
    for split in ("val", "unseen"):
        xe, de = _load_stack(COLOUR.iqa / split)
        evals[split] = (xe, de["true_quality"].to_numpy())
    rows = []
    for pool in args.pools:
        net, log, seconds = train(prior, pool, x, q, evals)
        rows.append({"input_pool": pool, "resolution_seen": x.shape[-1] // pool, "pipeline": pool == prior.input_pool,
                     "spearman_val": log[-1]["spearman_val"], "spearman_unseen": log[-1]["spearman_unseen"],
                     "best_epoch_val": int(np.argmax([r["spearman_val"] for r in log])) + 1,
                     "train_seconds": seconds, "score_images_per_s": scoring_rate(net, evals["val"][0]),
                     "matches_pipeline": same_weights(net, COLOUR.prior) if pool == prior.input_pool else None})
        print(f"input_pool {pool}: Spearman val {rows[-1]['spearman_val']:.3f}, unseen {rows[-1]['spearman_unseen']:.3f}, "
              f"{seconds:.0f} s to train", flush=True)
    table = pd.DataFrame(rows)
    print(f"the colour prior ({len(x)} training images of {x.shape[-1]} px, {prior.epochs} epochs) by input_pool:")
    print(table.round(3).to_string(index=False))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.6g")
    return table


if __name__ == "__main__":
    main()
