"""Does a rerun give the same bits, also on a busy machine? Retrain one stage-II run of the
pipeline (a `train_seed@<row>-<seed>` stage, after `dvc repro`) into a scratch checkpoint while
other processes load every core, then compare its trained tensors with the pipeline's checkpoint.

    python benchmarks/rerun_check.py baseline 1            # with the CPU loaded (the default)
    python benchmarks/rerun_check.py baseline 1 --no-load

Prints one JSON line: whether every tensor is bit-identical, and the largest difference if not.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import conditioned, runtime  # noqa: E402
from iqpfr.config import load_params  # noqa: E402
from iqpfr.train import load_checkpoint  # noqa: E402


def _burn(stop: float) -> None:
    x = 0.0
    while time.time() < stop:
        x = (x + 1.0) * 0.999


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("row")
    ap.add_argument("seed", type=int)
    ap.add_argument("--no-load", action="store_true", help="leave the other cores idle")
    args = ap.parse_args()
    runtime.configure()
    params = load_params(ROOT / "params.yaml")
    p = conditioned.seed_params(params, args.row, args.seed)
    reference = load_checkpoint(ROOT / conditioned.seed_checkpoint(args.row, args.seed), conditioned.STAGE2_FORMAT)
    burners = []
    if not args.no_load:  # one busy process per core, for longer than the run takes
        stop = time.time() + 3600
        burners = [mp.Process(target=_burn, args=(stop,), daemon=True) for _ in range(mp.cpu_count())]
        for b in burners:
            b.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ck = Path(tmp) / "restorer.pt"
            conditioned.train_conditioned(p.data, p.degrade, p.vqgan, p.transformer, p.stage2, progress=lambda r: None,
                                          checkpoint=ck, log_csv=Path(tmp) / "log.csv")
            rerun = load_checkpoint(ck, conditioned.STAGE2_FORMAT)
    finally:
        for b in burners:
            b.terminate()
    diffs = {k: float((rerun["model"][k].float() - v.float()).abs().max()) for k, v in reference["model"].items()}
    print(json.dumps({"row": args.row, "seed": args.seed, "cpu_loaded": not args.no_load,
                      "tensors": len(diffs), "bit_identical": all(torch.equal(rerun["model"][k], v)
                                                                   for k, v in reference["model"].items()),
                      "max_abs_difference": max(diffs.values())}))


if __name__ == "__main__":
    main()
