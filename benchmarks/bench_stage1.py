"""Stage-I training step time and peak memory on this machine (CPU unless CUDA is present),
in fp32 and under bf16 autocast, with the bf16/fp32 ratio measured in the same run.

Runs each (configuration, precision) in its own process (so peak RSS is per case), with random
images and random weights: 1 warm-up step, then `--steps` timed steps. The perceptual term is
pyiqa's SSIM (LPIPS-VGG weights are not available offline); the GAN is on (worst case). The
precision the pipeline uses is not chosen from these timings but from the CPU's flags
(iqpfr.precision); this benchmark is what that rule is checked against.

    python benchmarks/bench_stage1.py                 # default and paper configs
    python benchmarks/bench_stage1.py --only default
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

CONFIGS = {
    "tiny": ("profiles/tiny.yaml", 4),
    "default": ("params.yaml", 16),
    "paper": ("profiles/paper.yaml", 1),
}


def run_one(name: str, steps: int, precision: str) -> dict:
    import torch

    from iqpfr import codebook
    from iqpfr.config import load_params
    from iqpfr.train import Stage1Settings, Stage1Trainer, make_perceptual

    path, batch = CONFIGS[name]
    p = load_params(path)
    cfg = codebook.vqgan_config(p.data, p.vqgan)
    r = cfg.resolution
    images = torch.utils.data.TensorDataset(torch.rand(batch * 2, 3, r, r), torch.arange(batch * 2))
    settings = Stage1Settings(steps=steps + 1, batch_size=batch, lr=p.stage1.lr, gan_start=0, precision=precision)
    t = Stage1Trainer(cfg, settings, images, torch.ones(batch * 2), make_perceptual("ssim", "cpu"))
    t.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        t.train_step()
    sec = (time.perf_counter() - t0) / steps
    return {"config": name, "precision": precision, "resolution": r, "batch": batch, "seconds_per_step": round(sec, 3),
            "images_per_second": round(batch / sec, 2), "threads": torch.get_num_threads(),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            "parameters_M": round(sum(q.numel() for q in t.model.parameters()) / 1e6, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", choices=sorted(CONFIGS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child, args.steps, args.precision)))
        return
    for name in [args.only] if args.only else ["default", "paper"]:
        times = {}
        for prec in ("fp32", "bf16"):
            out = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps),
                                  "--precision", prec], capture_output=True, text=True, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            times[prec] = row["seconds_per_step"]
            print(json.dumps(row))
        print(json.dumps({"config": name, "bf16_speedup_over_fp32": round(times["fp32"] / times["bf16"], 2)}))


if __name__ == "__main__":
    main()
