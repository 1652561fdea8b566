"""The benchmark suite: how fast each part of iqpfr runs on this machine, and what each faster
variant costs in accuracy. Every figure is paired with its plain reference measured in the same run.

    python -m benchmarks                       # every case, results in reports/metrics/bench.json
    python -m benchmarks --only default_restore scoring
    python -m benchmarks --compile             # also torch.compile (minutes of compilation on a CPU)

Cases
- paper_restore: the paper-size restorer (512 px, random weights), batch 1.
- default_restore: the default restorer: the trained checkpoint when models/ holds one (else
  random weights, said in the output), batch 16.
  Variants of both: eager fp32 contiguous (the reference), channels_last, bf16 autocast, bf16 +
  channels_last, and torch.compile (contiguous and channels_last) with --compile. Times are medians of `repeats` interleaved
  rounds. Each variant's output is compared with the reference's: max abs difference, PSNR in dB
  and, for the default model, the fraction of argmax codes that changed. A variant is within
  tolerance when, on the default model, PSNR >= 40 dB and <= 1% of codes change;
  `paper_512_speedup` is the best paper-size faces/s within tolerance over eager fp32.
- whole_photo: `iqpfr restore` on a photo with pasted synthetic faces: detection + alignment +
  restore + paste-back, seconds per face and peak memory above the loaded model.
- stage1_step, stage2_step: one training step of the default configuration (perceptual and GAN
  terms on; the quality loss on) in fp32, under bf16 autocast, and under bf16 autocast with every
  GroupNorm in fp32 ("bf16-gn32", a design measurement: `groupnorm_in_fp32`), each in its own
  process (peak memory per case); the ratios in the same run.
- scoring: the learned prior and NIQE over the same images (--score-images, 256), a per-image loop
  against batches of 8, 16, 32 and the default profile's scoring.batch_size (the learned prior also in
  channels_last, and with --compile also compiled, one static graph per batch size), and the folder scorer
  (`iqpfr score`: decode + score, streamed) with 1 and 2 processes.

The precision the package uses is never chosen from these timings (iqpfr/precision.py reads the
CPU's flags); this suite is what that rule is checked against.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "metrics" / "bench.json"
TOLERANCE = {"psnr_db": 40.0, "changed_codes": 0.01}


def machine() -> dict:
    """CPU model, cores, the ISA flags that matter for bf16, torch version (and the GPU, if any)."""
    from iqpfr import precision, runtime

    flags = precision.cpu_flags()
    return {**runtime.describe(), "isa": sorted(f for f in flags if f.startswith(("amx", "avx512", "avx2", "fma")))}


# ----------------------------------------------------------------------------------------------
# restore variants


def _variant_context(model, name: str):
    """"bf16...": autocast over the whole model; "bf16-conv...": `iqpfr restore --precision bf16`
    (the encoder and generator in bf16, the Transformer and code lookup in fp32); else fp32."""
    from iqpfr import precision
    from iqpfr.restore import precision_context

    if name.startswith("bf16-conv"):
        return precision_context(model, torch.device("cpu"), "bf16")
    return precision.autocast("bf16" if name.startswith("bf16") else "fp32", "cpu")


def _prepare(model, name: str):
    """The model as the variant runs it (channels_last: weights in NHWC)."""
    fmt = torch.channels_last if "channels_last" in name else torch.contiguous_format
    return model.to(memory_format=fmt)


def _input(x: torch.Tensor, name: str) -> torch.Tensor:
    """The input as the variant feeds it (channels_last: NHWC)."""
    return x.to(memory_format=torch.channels_last) if "channels_last" in name else x


def _codes(model, x: torch.Tensor, score: float = 0.95) -> torch.Tensor:
    """The argmax codes (B, 2, T) the restorer picks for LQ x at quality `score` (with its guidance)."""
    from iqpfr.transformer import score_to_bin

    bins = score_to_bin(torch.full((x.shape[0],), score))
    lc, lh = model.guided_logits(model.encoder(x * 2 - 1), bins, model.guidance)
    return torch.stack([lc.argmax(-1), lh.argmax(-1)], 1)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.float() - b.float()).pow(2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


@torch.no_grad()
def restore_case(model, x: torch.Tensor, batch: int, repeats: int, use_compile: bool, trained: bool) -> dict:
    """Faces/s and output differences of every variant on LQ x (N, 3, R, R) in [0,1]."""
    names = ["fp32", "fp32+channels_last", "bf16", "bf16+channels_last", "bf16-conv", "bf16-conv+channels_last"]
    names += ["compile", "compile+channels_last"] if use_compile else []
    runners, extra = {}, {}
    for name in names:
        if name.startswith("compile"):
            fn = torch.compile(model.restore)
            m = _prepare(model, name)
            xx = _input(x, name)
            t = time.perf_counter()
            try:
                fn(xx[:batch])
            except Exception as err:  # noqa: BLE001 - report why compile does not work here
                extra[name] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                continue
            finally:
                _prepare(m, "fp32")
            extra[name] = {"compile_seconds": round(time.perf_counter() - t, 1)}
            runners[name] = fn
        else:
            runners[name] = model.restore
    outputs, times = {}, {n: [] for n in runners}
    for _ in range(repeats):  # interleaved: a busy moment hits every variant alike
        for name, fn in runners.items():
            m = _prepare(model, name)
            xx = _input(x, name)
            with _variant_context(model, name):
                fn(xx[:batch])  # warm-up
                t = time.perf_counter()
                out = torch.cat([fn(xx[i:i + batch]).float() for i in range(0, len(xx), batch)])
            times[name].append(time.perf_counter() - t)
            outputs[name] = out
            _prepare(m, "fp32")
    ref = outputs["fp32"]
    with _variant_context(model, "fp32"):
        ref_codes = _codes(model, x)
    rows = {}
    for name in runners:
        sec = float(np.median(times[name]))
        row = {"faces_per_s": round(len(x) / sec, 3), "speedup": round(float(np.median(times["fp32"])) / sec, 2),
               "max_abs_diff": round(float((outputs[name] - ref).abs().max()), 5),
               "psnr_vs_fp32_db": round(_psnr(outputs[name], ref), 2), **extra.get(name, {})}
        if not name.startswith("compile"):
            m = _prepare(model, name)
            xx = _input(x, name)
            with _variant_context(model, name):
                row["changed_codes"] = round(float((_codes(m, xx) != ref_codes).float().mean()), 4)
            _prepare(m, "fp32")
        else:  # the compiled graph runs restore() whole: its codes are not observable, only its output
            row["changed_codes"] = None
        if trained:
            codes_ok = row["changed_codes"] is None or row["changed_codes"] <= TOLERANCE["changed_codes"]
            row["within_tolerance"] = bool(row["psnr_vs_fp32_db"] >= TOLERANCE["psnr_db"] and codes_ok)
            if row["changed_codes"] is None:
                row["tolerance_checked_on"] = "output PSNR only"
        rows[name] = row
    for name, info in extra.items():
        rows.setdefault(name, info)
    return rows


def _restorer(profile: str):
    from iqpfr import codebook, conditioned
    from iqpfr.config import load_params
    from iqpfr.transformer import QualityRestorer
    from iqpfr.vqgan import DualCodebookVQGAN

    p = load_params(ROOT / profile)
    v = codebook.vqgan_config(p.data, p.vqgan)
    torch.manual_seed(0)
    return QualityRestorer(DualCodebookVQGAN(v), conditioned.transformer_config(p.data, p.vqgan, p.transformer)).eval(), v.resolution


def case_default_restore(args) -> dict:
    from iqpfr.conditioned import STAGE2, load_restorer
    from iqpfr.data import sha256_file
    from iqpfr.pipeline import TESTSET

    trained = (ROOT / STAGE2).exists()
    guidance = 1.0
    if trained:
        old = Path.cwd()
        os.chdir(ROOT)
        try:
            from iqpfr.config import load_params

            guidance = load_params("params.yaml").transformer.guidance  # as the evaluation runs the model
            model = load_restorer(STAGE2, guidance=guidance)[0]
            from iqpfr.evaluate import load_set

            x = load_set(TESTSET / "pairs")["lq"][: args.default_faces] if (TESTSET / "pairs").exists() else None
        finally:
            os.chdir(old)
    else:
        model, _ = _restorer("params.yaml")
        x = None
    r = model.cfg.latent_size * model.stage1.cfg.downsample_factor
    if x is None:
        x = torch.rand(args.default_faces, 3, r, r, generator=torch.Generator().manual_seed(0))
    rows = restore_case(model, x, batch=16, repeats=args.repeats, use_compile=args.compile, trained=True)
    return {"weights": "trained (models/stage2)" if trained else "random (no trained checkpoint here)",
            "checkpoint_sha256": sha256_file(ROOT / STAGE2) if trained else None, "guidance": guidance,
            "resolution": int(x.shape[-1]), "faces": len(x), "batch": 16, "variants": rows}


def case_paper_restore(args) -> dict:
    model, r = _restorer("profiles/paper.yaml")
    x = torch.rand(args.faces, 3, r, r, generator=torch.Generator().manual_seed(0))
    rows = restore_case(model, x, batch=1, repeats=args.repeats, use_compile=args.compile, trained=False)
    return {"weights": "random", "resolution": r, "faces": len(x), "batch": 1, "variants": rows}


def paper_speedup(results: dict) -> dict:
    """Best paper-size faces/s within tolerance (judged on the default model) over eager fp32."""
    paper = results.get("paper_restore", {}).get("variants", {})
    default = results.get("default_restore", {}).get("variants", {})
    ok = [n for n, v in paper.items() if "faces_per_s" in v and (n == "fp32" or default.get(n, {}).get("within_tolerance"))]
    if not ok:
        return {}
    best = max(ok, key=lambda n: paper[n]["faces_per_s"])
    return {"paper_512_speedup": round(paper[best]["faces_per_s"] / paper["fp32"]["faces_per_s"], 2),
            "paper_512_best_variant": best}


# ----------------------------------------------------------------------------------------------
# whole photo


def _face(seed: int, k: int, j: int, size: int) -> np.ndarray:
    from iqpfr.synthfaces import render_face

    return render_face([seed, k, j], size).image


def synthetic_photo(width: int, height: int, faces: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) float32 in [0,1]: a mid-grey canvas with `faces` synthetic faces pasted on a grid,
    each 60% of its cell, all of which dlib's detector finds in the photo (it misses some renders:
    a cell whose face it misses gets the next render, for up to 10 rounds)."""
    from iqpfr.restore import detect_faces

    photo = np.full((height, width, 3), 0.45, np.float32)
    cols = max(1, int(np.ceil(np.sqrt(faces * width / height))))
    rows = int(np.ceil(faces / cols))
    cw, ch = width // cols, height // rows
    face_px = int(0.6 * min(cw, ch))
    cells = {k: (divmod(k, cols)[0] * ch + (ch - face_px) // 2, divmod(k, cols)[1] * cw + (cw - face_px) // 2)
             for k in range(faces)}
    render = {k: 0 for k in range(faces)}
    missing = list(cells)
    for _ in range(10):
        for k in missing:
            y, x = cells[k]
            photo[y:y + face_px, x:x + face_px] = _face(seed, k, render[k], face_px)
        centres = [(bx + bw / 2, by + bh / 2) for bx, by, bw, bh in detect_faces(photo)]
        missing = [k for k, (y, x) in cells.items()
                   if not any(x <= cx <= x + face_px and y <= cy <= y + face_px for cx, cy in centres)]
        if not missing:
            return photo
        for k in missing:
            render[k] += 1
    raise RuntimeError(f"the detector still misses {len(missing)} of {faces} synthetic faces")


def case_whole_photo(args) -> dict:
    """`iqpfr restore` (whole-photo mode) on one synthetic photo, restored in a child process so
    that the peak memory measured is the restore's own."""
    return photo_benchmark(args.photo_width, args.photo_height, args.photo_faces)


def photo_benchmark(width: int, height: int, faces: int) -> dict:
    from iqpfr import data

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "photo.png"
        data.write_png(src, synthetic_photo(width, height, faces))
        out = subprocess.run([sys.executable, __file__, "--child-photo", str(src)], capture_output=True, text=True,
                             cwd=ROOT)
    if out.returncode != 0:
        return {"error": out.stderr[-1000:]}
    return {"photo": f"{width}x{height}", "faces_pasted": faces, **json.loads(out.stdout.strip().splitlines()[-1])}


def _rss_gb() -> float:
    """This process's resident memory now (Linux), in GiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def _peak_gb() -> float:
    """This process's peak resident memory (VmHWM), in GiB. Not getrusage's ru_maxrss: on Linux a
    child started by fork + exec inherits the parent's maximum there."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) / 2**20


def run_photo(src: Path) -> dict:
    from iqpfr.restore import RestoreOptions, run

    model, r = _restorer("params.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        base = _rss_gb()  # the loaded model and the interpreter
        t = time.perf_counter()
        summary = run([src], Path(tmp) / "out", model, RestoreOptions(aligned=False, batch_size=8), torch.device("cpu"))
        sec = time.perf_counter() - t
    peak = _peak_gb()
    said = [n for _, n in summary.notes]
    restored = sum(int(n.split()[0]) for n in said if n.endswith("face(s) restored"))
    return {"faces_restored": restored, "notes": said[:3], "seconds": round(sec, 2),
            "seconds_per_face": round(sec / max(restored, 1), 3), "model_rss_gb": round(base, 3),
            "peak_rss_above_model_gb": round(peak - base, 3), "model_resolution": r}


# ----------------------------------------------------------------------------------------------
# training steps


@contextlib.contextmanager
def groupnorm_in_fp32():
    """A design measurement, not the package's code: inside, every GroupNorm normalises in fp32
    under autocast (its input cast up, its output cast back), because on a CPU bf16 GroupNorm's
    backward pass is slow (profiled: 3.7x fp32's in a stage-II step). In fp32 it computes what
    nn.GroupNorm computes. The class's forward is put back on leaving."""
    import torch.nn.functional as F

    original = torch.nn.GroupNorm.forward

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps).to(x.dtype)

    torch.nn.GroupNorm.forward = forward
    try:
        yield
    finally:
        torch.nn.GroupNorm.forward = original


def run_step(stage: str, prec: str, steps: int) -> dict:
    """Seconds per training step of the default configuration in this process ("bf16-gn32": bf16
    with GroupNorm in fp32, `groupnorm_in_fp32`)."""
    from iqpfr import codebook, conditioned, iqanet
    from iqpfr.config import load_params
    from iqpfr.degrade import PRESETS
    from iqpfr.train import Stage1Settings, Stage1Trainer, make_perceptual

    if prec == "bf16-gn32":
        with groupnorm_in_fp32():
            return {**run_step(stage, "bf16", steps), "precision": prec}
    p = load_params(ROOT / "params.yaml")
    cfg = codebook.vqgan_config(p.data, p.vqgan)
    r, b = cfg.resolution, p.stage1.batch_size
    torch.manual_seed(0)
    images = torch.utils.data.TensorDataset(torch.rand(b * 2, 3, r, r), torch.arange(b * 2))
    if stage == "stage1":
        s = Stage1Settings(steps=steps + 1, batch_size=b, lr=p.stage1.lr, gan_start=0, precision=prec,
                           perceptual_weight=p.stage1.perceptual_weight, restart_every=p.stage1.restart_every)
        t = Stage1Trainer(cfg, s, images, torch.ones(b * 2), make_perceptual(p.stage1.perceptual, "cpu"))
    else:
        from iqpfr.transformer import QualityRestorer

        stage1 = Stage1Trainer(cfg, Stage1Settings(steps=1, batch_size=b, lr=1e-3), images, torch.ones(b * 2)).model.eval()
        model = QualityRestorer(stage1, conditioned.transformer_config(p.data, p.vqgan, p.transformer))
        k, lat = cfg.codebook_size, cfg.latent_size
        targets = {"idx_c": torch.randint(0, k, (b * 2, 2, lat, lat)), "idx_h": torch.randint(0, k, (b * 2, 2, lat, lat))}
        prior = iqanet.IqaNet(iqanet.IqaNetConfig(width=p.prior.width, mode="regression"))

        class Q(torch.nn.Module):  # the learned prior as the differentiable Q (random weights)
            def forward(self, x):
                return prior.score(x)

        s = conditioned.Stage2Settings(steps=steps + 1, batch_size=p.stage2.batch_size, lr=p.stage2.lr,
                                       quality_weight=p.stage2.quality_weight, quality_start=0, precision=prec)
        t = conditioned.Stage2Trainer(model, s, images, targets, torch.rand(b * 2), conditioned.DegradedLQ(PRESETS["mild"]), Q())
    t.train_step()
    t0 = time.perf_counter()
    for _ in range(steps):
        t.train_step()
    sec = (time.perf_counter() - t0) / steps
    return {"stage": stage, "precision": prec, "seconds_per_step": round(sec, 3), "batch": b, "resolution": r,
            "peak_rss_gb": round(_peak_gb(), 2)}


def case_steps(args) -> dict:
    out = {}
    for stage in ("stage1", "stage2"):
        rows = {}
        for prec in ("fp32", "bf16", "bf16-gn32"):
            res = subprocess.run([sys.executable, __file__, "--child-step", stage, "--precision", prec,
                                  "--steps", str(args.steps)], capture_output=True, text=True, cwd=ROOT)
            rows[prec] = json.loads(res.stdout.strip().splitlines()[-1]) if res.returncode == 0 else {"error": res.stderr[-800:]}
        if all("seconds_per_step" in v for v in rows.values()):
            for prec in ("bf16", "bf16-gn32"):
                rows[f"{prec}_speedup_over_fp32"] = round(rows["fp32"]["seconds_per_step"] / rows[prec]["seconds_per_step"], 2)
        out[f"{stage}_step"] = rows
    return out


# ----------------------------------------------------------------------------------------------
# scoring


def _seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _in_batches(fn, x: torch.Tensor, b: int):
    """A callable that runs `fn` over x in batches of b and returns the outputs."""
    return lambda: [fn(x[i:i + b]) for i in range(0, len(x), b)]


def _interleaved(loop, variants: dict, repeats: int) -> tuple[float, dict]:
    """Median seconds of `loop` and of each variant, and each variant's median ratio to the loop.

    `variants` maps a name to (prepare, run): prepare() puts the model in the variant's layout.
    Rounds are interleaved and each ratio pairs a variant with the loop timed just before it, so a
    busy moment of the machine hits both sides of a ratio alike."""
    t_loop, times, ratios = [], {k: [] for k in variants}, {k: [] for k in variants}
    for _ in range(repeats):
        for name, (prepare, run) in variants.items():
            prepare(torch.contiguous_format)
            t_loop.append(_seconds(loop))
            prepare(None)
            times[name].append(_seconds(run))
            ratios[name].append(t_loop[-1] / times[name][-1])
    return float(np.median(t_loop)), {k: (float(np.median(times[k])), float(np.median(ratios[k]))) for k in variants}


@torch.no_grad()
def case_scoring(args) -> dict:
    """Per-image loop against batches for the learned prior and NIQE, and the folder scorer.

    Batches of 8, 16, 32 and the default profile's `scoring.batch_size` (64); for the learned prior also
    in channels_last, and with --compile compiled (`dynamic=False`: one static graph per batch size
    and layout). Each speedup is the median over interleaved rounds of the loop's time over the
    variant's, each round timing the loop just before the variant. `batched_speedup` is the
    configured batch size's, in the scorer's own layout.
    """
    from iqpfr import data, iqanet, quality
    from iqpfr.config import load_params

    configured = load_params(ROOT / "profiles" / "default.yaml").scoring.batch_size
    n, size = args.score_images, 64
    x = torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(0))
    out = {"images": n, "size": size, "configured_batch": configured}
    with tempfile.TemporaryDirectory() as tmp:
        prior = Path(tmp) / "iqanet.pt"
        torch.manual_seed(0)
        iqanet.save(prior, iqanet.IqaNet(iqanet.IqaNetConfig(width=16, mode="regression")), {"resolution": size})
        for name in ("learned", "niqe"):
            m = quality.make_metric(name, "cpu", prior, min_size=256 if name == "niqe" else 0)
            m(x[:2])
            loop = torch.cat([m(x[i:i + 1]) for i in range(n)])
            variants, outputs, extra = {}, {}, {}
            formats = ("contiguous", "channels_last") if name == "learned" else ("contiguous",)
            compiled = torch.compile(m.module, dynamic=False) if args.compile and name == "learned" else None
            for fmt in formats:
                mf = torch.channels_last if fmt == "channels_last" else torch.contiguous_format
                xx = x.contiguous(memory_format=mf)
                suffix = "_channels_last" if fmt == "channels_last" else ""

                def prepare(layout, mf=mf, m=m):
                    m.module.to(memory_format=layout or mf)

                for b in sorted({8, 16, 32, configured}):
                    for key, fn in ((f"batch{b}{suffix}", m), (f"batch{b}_compiled{suffix}", compiled)):
                        if fn is None:
                            continue
                        run = _in_batches(fn, xx, b)
                        prepare(None)
                        t = time.perf_counter()
                        outputs[key] = torch.cat([o.reshape(-1) for o in run()])  # compiled: compiles this size and layout
                        if fn is compiled:
                            extra[key] = {"compile_seconds": round(time.perf_counter() - t - _seconds(run), 1)}
                        variants[key] = (prepare, run)
            t_loop, timed = _interleaved(_in_batches(m, x, 1), variants, args.repeats)
            m.module.to(memory_format=torch.contiguous_format)
            row = {"per_image_loop_images_per_s": round(n / t_loop, 1)}
            for key, (sec, ratio) in timed.items():
                row[key] = {"images_per_s": round(n / sec, 1), "speedup": round(ratio, 2), **extra.get(key, {}),
                            "max_abs_diff_vs_loop": float((loop - outputs[key]).abs().max())}
            row["batched_images_per_s"] = row[f"batch{configured}"]["images_per_s"]
            row["batched_speedup"] = row[f"batch{configured}"]["speedup"]
            row["max_abs_diff_batched_vs_loop"] = row[f"batch{configured}"]["max_abs_diff_vs_loop"]
            out[name] = row
        folder = Path(tmp) / "faces"
        for i in range(n):
            data.write_png(folder / f"{i:04d}.png", x[i].permute(1, 2, 0).numpy())
        for procs in (1, 2):
            csv = Path(tmp) / f"scores{procs}.csv"
            cmd = ([sys.executable, "-m", "iqpfr.cli"] if procs == 1 else
                   [str(Path(sys.executable).parent / "torchrun"), "--standalone", "--nproc_per_node", "2", "-m", "iqpfr.cli"])
            env = {**os.environ, "IQPFR_THREADS": str(max(1, (os.cpu_count() or 1) // procs))}
            t = time.perf_counter()
            res = subprocess.run(cmd + ["score", str(folder), "-o", str(csv), "--prior", str(prior), "--size", str(size),
                                        "--metrics", "learned", "niqe", "--workers", "1"], capture_output=True, text=True,
                                 env=env, cwd=ROOT)
            sec = time.perf_counter() - t
            out[f"folder_scorer_{procs}_process"] = ({"images_per_s_with_startup": round(n / sec, 1), "seconds": round(sec, 1)}
                                                     if res.returncode == 0 else {"error": res.stderr[-800:]})
    for name in ("learned", "niqe"):
        out[name]["speedup_note"] = "batched over the per-image loop, same process, same images"
    return out


CASES = {"default_restore": case_default_restore, "paper_restore": case_paper_restore, "whole_photo": case_whole_photo,
         "steps": case_steps, "scoring": case_scoring}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=sorted(CASES))
    ap.add_argument("--faces", type=int, default=2, help="paper-size faces per round")
    ap.add_argument("--default-faces", type=int, default=96,
                    help="default-model faces per round (test LQ when present): the changed-code fraction is counted on them")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed training steps per case")
    ap.add_argument("--score-images", type=int, default=256)
    ap.add_argument("--photo-width", type=int, default=1600)
    ap.add_argument("--photo-height", type=int, default=1200)
    ap.add_argument("--photo-faces", type=int, default=6)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--child-step", help=argparse.SUPPRESS)
    ap.add_argument("--child-photo", help=argparse.SUPPRESS)
    ap.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from iqpfr import runtime

    runtime.configure(compiling=args.compile)
    if args.child_step:
        print(json.dumps(run_step(args.child_step, args.precision, args.steps)))
        return {}
    if args.child_photo:
        print(json.dumps(run_photo(Path(args.child_photo))))
        return {}
    results = {"machine": machine()}
    for name in args.only or list(CASES):
        t = time.perf_counter()
        res = CASES[name](args)
        results.update(res if name == "steps" else {name: res})
        print(f"[{name}: {time.perf_counter() - t:.0f} s]", json.dumps(res, indent=1), flush=True)
    out = Path(args.out)
    old = json.loads(out.read_text()) if out.exists() and args.only else {}  # --only: the other cases stay
    merged = {**old, **results}
    merged.update(paper_speedup(merged))
    from iqpfr import atomic

    atomic.write_text(out, json.dumps(merged, indent=2, sort_keys=True) + "\n")
    print(f"wrote {out}")
    return results


if __name__ == "__main__":
    main()
