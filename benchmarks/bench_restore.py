"""Faces per second of `QualityRestorer.restore` on this machine, fp32 against bf16 autocast.

Random weights (the timing does not depend on training), the default and the paper-size models,
batch 1; prints the fp32/bf16 speed ratio and the largest output difference between them. Then
the cost of whole-photo mode's face finding on skimage's astronaut (512 x 512): detection plus
5-point alignment per photo, dlib HOG against OpenCV's Haar cascade.

    python benchmarks/bench_restore.py [--faces 3]
"""
from __future__ import annotations

import argparse
import json
import time

import torch


def build(profile: str):
    from iqpfr import codebook, conditioned
    from iqpfr.config import load_params
    from iqpfr.transformer import QualityRestorer
    from iqpfr.vqgan import DualCodebookVQGAN

    p = load_params(profile)
    v = codebook.vqgan_config(p.data, p.vqgan)
    torch.manual_seed(0)
    stage1 = DualCodebookVQGAN(v)
    return QualityRestorer(stage1, conditioned.transformer_config(p.data, p.vqgan, p.transformer)).eval(), v.resolution


def time_restore(model, x: torch.Tensor, precision: str) -> tuple[float, torch.Tensor]:
    from iqpfr.restore import precision_context

    with precision_context(torch.device("cpu"), precision):
        model.restore(x[:1])  # warm-up
        t = time.perf_counter()
        outs = [model.restore(x[i:i + 1]).float() for i in range(len(x))]
    return len(x) / (time.perf_counter() - t), torch.cat(outs)


def time_detection(repeats: int = 5) -> dict:
    import numpy as np
    from skimage import data as skdata

    from iqpfr.restore import RestoreOptions, alignments

    img = skdata.astronaut().astype(np.float32) / 255
    out = {}
    for detector, align in (("dlib", "landmarks"), ("haar", "landmarks"), ("haar", "box")):
        opts = RestoreOptions(aligned=False, detector=detector, align=align)
        alignments(img, opts, 256)  # warm-up (loads the models)
        t = time.perf_counter()
        for _ in range(repeats):
            faces, _ = alignments(img, opts, 256)
        out[f"{detector}+{align}"] = {"ms_per_photo": round(1000 * (time.perf_counter() - t) / repeats, 1),
                                      "faces": len(faces)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=3)
    args = ap.parse_args()
    for name, profile in (("default", "params.yaml"), ("paper", "profiles/paper.yaml")):
        model, r = build(profile)
        x = torch.rand(args.faces, 3, r, r)
        fps32, y32 = time_restore(model, x, "fp32")
        fps16, y16 = time_restore(model, x, "bf16")
        print(json.dumps({"model": name, "resolution": r, "threads": torch.get_num_threads(),
                          "faces_per_s_fp32": round(fps32, 3), "faces_per_s_bf16": round(fps16, 3),
                          "bf16_speedup": round(fps16 / fps32, 2),
                          "max_abs_diff_bf16_vs_fp32": round(float((y32 - y16).abs().max()), 4),
                          "mean_abs_diff_bf16_vs_fp32": round(float((y32 - y16).abs().mean()), 5)}))
    print(json.dumps({"whole_photo_face_finding_512px": time_detection()}))


if __name__ == "__main__":
    main()
