"""GPU check of the paper profile (512 px): a stage-II training step and inference in bf16, peak
memory, and the achieved TFLOP/s of the Transformer and of the generator against the device's
peak. Random weights: the speed does not depend on training. On a machine without CUDA it says so
and exits 0.

    bash benchmarks/gpu_check.sh            # or: python benchmarks/gpu_check.py [--batch 4]

FLOPs are counted with torch.utils.flop_counter (matmuls and convolutions, forward), so
"achieved" is counted FLOPs / measured time; the peak is the vendor's dense bf16 figure for the
device (table below; unknown devices report none).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

# dense bf16 tensor-core peaks in TFLOP/s (vendor data sheets, without sparsity)
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0,
                    "RTX 4090": 165.0, "V100": 125.0}


def device_peak(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def count_flops(fn, *args) -> int:
    """FLOPs of one call of fn(*args) (forward only, no gradients)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args)
    return counter.get_total_flops()


def timed(fn, *args, repeats: int = 5) -> float:
    """Median seconds of fn(*args) on the current device (synchronised)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    fn(*args)
    sync()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn(*args)
        sync()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def parts(model, x: torch.Tensor):
    """The Transformer's and the generator's inputs for LQ x: (z_l, bins, z_hat)."""
    from iqpfr.transformer import score_to_bin

    bins = score_to_bin(torch.full((x.shape[0],), 0.95, device=x.device))
    with torch.no_grad():
        z = model.latent(x, bins)
        lc, lh = model.transformer(z, bins)
        z_hat = model.codes(lc.argmax(-1), lh.argmax(-1))
    return z, bins, z_hat


def _sig(x: float) -> float:
    """x to 4 significant digits (small figures stay non-zero)."""
    return float(f"{x:.4g}")


def achieved(model, x: torch.Tensor, peak: float | None) -> dict:
    z, bins, z_hat = parts(model, x)
    out = {}
    for name, fn, args in (("transformer", model.transformer, (z, bins)), ("generator", model.stage1.decode, (z_hat,))):
        flops = count_flops(fn, *args)
        with torch.autocast(x.device.type, dtype=torch.bfloat16), torch.no_grad():
            sec = timed(fn, *args)
        tflops = flops / sec / 1e12
        out[name] = {"gflops_per_call": _sig(flops / 1e9), "ms": _sig(sec * 1e3), "tflops": _sig(tflops),
                     "fraction_of_peak": _sig(tflops / peak) if peak else None}
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(json.dumps({"gpu_check": "skipped: no CUDA device on this machine"}))
        return 0
    sys.path.insert(0, str(ROOT))
    from benchmarks.suite import _restorer
    from iqpfr import conditioned, iqanet
    from iqpfr.degrade import PRESETS
    from iqpfr.restore import precision_context

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    peak = device_peak(name)
    model, r = _restorer("profiles/paper.yaml")
    model = model.to(dev)
    x = torch.rand(args.batch, 3, r, r, device=dev)
    torch.cuda.reset_peak_memory_stats()
    with precision_context(model, dev, "bf16"):  # as `iqpfr restore --precision bf16` runs it
        sec = timed(model.restore, x)
    report = {"device": name, "peak_bf16_tflops": peak, "resolution": r, "batch": args.batch,
              "inference_faces_per_s_bf16": round(args.batch / sec, 2),
              "inference_peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
              "achieved": achieved(model, x, peak)}
    # one stage-II training step of the paper profile (quality loss on), bf16 autocast
    k, lat = model.cfg.codebook_size, model.cfg.latent_size
    n = args.batch * 2
    images = torch.utils.data.TensorDataset(torch.rand(n, 3, r, r), torch.arange(n))
    targets = {"idx_c": torch.randint(0, k, (n, 2, lat, lat)), "idx_h": torch.randint(0, k, (n, 2, lat, lat))}
    prior = iqanet.IqaNet(iqanet.IqaNetConfig(width=32, mode="regression")).to(dev)

    class Q(torch.nn.Module):
        def forward(self, img):
            return prior.score(img)

    from iqpfr.train import Dist

    s = conditioned.Stage2Settings(steps=10, batch_size=args.batch, lr=1e-4, quality_weight=0.1, quality_start=0,
                                   precision="bf16")
    trainer = conditioned.Stage2Trainer(model.train(), s, images, targets,
                                        torch.rand(n), conditioned.DegradedLQ(PRESETS["mild"]), Q(), Dist(device=dev))
    torch.cuda.reset_peak_memory_stats()
    step = timed(lambda: trainer.train_step(), repeats=3)
    report.update({"stage2_step_seconds_bf16": round(step, 3),
                   "stage2_step_peak_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)})
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
