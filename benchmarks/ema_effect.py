"""What the EMA of each stage's weights does to the trained default model: the stage-I held-out PSNR
and the stage-II S sweep, decoded once with the EMA weights and once with the raw ones.

Both stages keep their raw weights beside the EMA in the checkpoint, so this needs no training:

    python benchmarks/ema_effect.py      # after dvc repro (models/stage1, models/stage2, data/testset)

Stage I: PSNR of the lambda = 0 reconstruction of the held-out GTs (benchmarks/stage1_design.py's
measure). Stage II: mean SSIM to the pristine oracle of the restored test pairs at S = 0.05 and
0.95 (evaluation's metric), and their difference, the knob's reach.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import runtime  # noqa: E402
from iqpfr.conditioned import load_restorer  # noqa: E402
from iqpfr.evaluate import load_set  # noqa: E402
from iqpfr.pipeline import TESTSET, WORLD, _load_stack  # noqa: E402
from iqpfr.train import load_stage1_model  # noqa: E402

from benchmarks.guidance import mean_ssim  # noqa: E402
from benchmarks.stage1_design import holdout_figures  # noqa: E402


@torch.no_grad()
def oracle_ssim(model, lq: torch.Tensor, oracle: torch.Tensor, score: float) -> float:
    """Mean SSIM to the oracle of model.restore(lq) at `score`; lq, oracle (N, 3, R, R) in [0,1]."""
    return mean_ssim(model.restore(lq, score=score), oracle)


def main() -> None:
    runtime.configure()
    holdout, _ = _load_stack(ROOT / WORLD / "holdout")
    pairs = load_set(ROOT / TESTSET / "pairs")
    for ema in (True, False):
        stage1, info = load_stage1_model(ROOT / "models/stage1/vqgan.pt", ema=ema)
        psnr, _ = holdout_figures(stage1, holdout)
        print(f"stage I, {'EMA' if ema else 'raw'} generator (ema_decay {info['train_config']['ema_decay']}): "
              f"held-out PSNR (lambda = 0) {psnr:.2f} dB")
    for ema in (True, False):
        model, info = load_restorer(ROOT / "models/stage2/restorer.pt", ROOT / "models/stage1/vqgan.pt", ema=ema)
        lo, hi = (oracle_ssim(model, pairs["lq"], pairs["oracle"], s) for s in (0.05, 0.95))
        print(f"stage II, {'EMA' if ema else 'raw'} weights (ema_decay {info['train_config']['ema_decay']}): "
              f"SSIM to the oracle {lo:.4f} at S = 0.05, {hi:.4f} at S = 0.95, gain {hi - lo:+.4f}")


if __name__ == "__main__":
    main()
