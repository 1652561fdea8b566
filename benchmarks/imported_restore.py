"""Seconds per 512 px face for a restorer of the imported (CodeFormer-family) architecture.

    python benchmarks/imported_restore.py [--repeats 3]

The released files are not available offline, so the model carries random weights. It has the
same architecture and compute as `iqpfr import-weights` output of the authors' checkpoint: paper
VQGAN, 9-layer Transformer, score embedding and fusion blocks. Cases: fp32 and bf16 as
`iqpfr restore --precision bf16` runs it (the encoder, the fusion blocks and the generator under
autocast, the Transformer in fp32), each at fidelity w = 0 (blocks off, the authors' setting) and w = 0.5. Each figure is the median
of `repeats` runs of `restore` on one face, after a warm-up; the output's max abs difference from
fp32 is printed beside the bf16 case.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from iqpfr.importweights import AUTHORS_HQ_WEIGHT, restorer_configs
from iqpfr.restore import precision_context
from iqpfr.transformer import QualityRestorer
from iqpfr.vqgan import DualCodebookVQGAN


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    vq, tc = restorer_configs("iqpir", AUTHORS_HQ_WEIGHT)
    model = QualityRestorer(DualCodebookVQGAN(vq), tc).eval()
    x = torch.rand(1, 3, 512, 512)
    results, reference = {}, {}
    for w in (0.0, 0.5):
        for prec in ("fp32", "bf16"):
            with precision_context(model, torch.device("cpu"), prec):
                out = model.restore(x, score=0.9, fidelity=w).float()  # warm-up
                times = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    model.restore(x, score=0.9, fidelity=w)
                    times.append(time.perf_counter() - t0)
            key = f"{prec}_w{w:g}"
            results[key] = statistics.median(times)
            if prec == "fp32":
                reference[w] = out
            diff = float((out - reference[w]).abs().max())
            print(f"{key:10s} {results[key]:6.2f} s/face" + (f"   max |out - fp32| {diff:.3g}" if prec != "fp32" else ""))
    return results


if __name__ == "__main__":
    main()
