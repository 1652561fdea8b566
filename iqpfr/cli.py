"""`iqpfr` command line: the pipeline's non-notebook stages.

Each stage command reads exactly the params sections declared in STAGES (dvc.yaml lists the
same sections; a test checks it) and calls the matching function of the package.

    iqpfr stage world          # training GTs (synthetic world or ingested folder)
    iqpfr stage iqa_data       # data for the learned NR-IQA prior
    iqpfr stage iqa_helper     # a helper restorer's labelled outputs for the prior (iqpfr/helper.py)
    iqpfr stage train_prior    # train the learned NR-IQA
    iqpfr stage testset        # seeded LQ/HQ test pairs and real LQ folders
    iqpfr stage latent_targets # code indices of every GT under the frozen stage-I model
    iqpfr variant NAME         # stage II of one variant (params.yaml `variants`); torchrun-aware
    iqpfr task underwater STAGE  # a stage of another task: world, train_prior, score, stage1,
                                 # latent_targets, stage2, variant (its `baseline`)
    iqpfr task colour STAGE      # the colour task (no stage1: it reads the face task's)
    torchrun --nproc_per_node 3 -m iqpfr.cli train stage1   # stage I on 3 GPUs (then dvc repro)
    iqpfr restore INPUT -o OUT # restore faces (see `iqpfr restore -h`)
    iqpfr score FOLDER -o CSV  # NR-IQA scores of a folder of any size (torchrun-aware, resumable)
    iqpfr export -o FILE       # the trained restorer and its stage I in one file
    iqpfr import-weights FILE -o BUNDLE  # a released CodeFormer/IQPFR checkpoint as an iqpfr bundle
    iqpfr evaluate --checkpoint BUNDLE --set DIR  # one restorer on a test set, notebook 04's metrics
    iqpfr check-params [FILE]  # validate a params file (e.g. profiles/paper.yaml)
"""
from __future__ import annotations

import argparse
import json
import sys

from . import codebook, colour, conditioned, data, helper, pipeline, precision, runtime, task, underwater
from .config import ConfigError, load_params, section, task_params

STAGES = {
    "world": (pipeline.build_world, ("data", "capture")),
    "iqa_data": (pipeline.build_iqa_sets, ("data", "capture", "iqa")),
    "iqa_helper": (helper.build_helper_set, ("data", "degrade", "vqgan", "helper")),
    "train_prior": (pipeline.train_prior, ("data", "iqa", "prior", "helper")),
    "testset": (pipeline.build_testset, ("data", "capture", "degrade", "testset")),
    "latent_targets": (codebook.latent_targets, ("data", "vqgan")),
}

# Training entry points for torchrun (multi-GPU / multi-node); the notebook stages call the same
# functions and resume from (or reuse) the checkpoint these write.
TRAIN = {
    "stage1": (codebook.train_codebook, ("data", "vqgan", "stage1")),
    "stage2": (conditioned.train_conditioned, ("data", "degrade", "vqgan", "transformer", "stage2")),
}

# `iqpfr task TASK STAGE`: the shared stages, run for any task with its Task and its params
# (config.task_params: the task section's overrides applied, so each also reads that section).
TASK_STAGES = {
    "train_prior": (pipeline.train_prior, ("data", "iqa", "prior")),
    "score": (pipeline.score_task, ("data", "scoring")),
    "stage1": (codebook.train_codebook, ("data", "vqgan", "stage1")),
    "latent_targets": (codebook.latent_targets, ("data", "vqgan")),
    "stage2": (conditioned.train_conditioned, ("data", "degrade", "vqgan", "transformer", "stage2")),
}
# each task's own world stage (the one stage that knows what the task's images are)
TASK_WORLDS = {"underwater": (underwater.build_sets, ("data", "iqa", "underwater")),
               "colour": (colour.build_sets, ("data", "iqa", "degrade", "colour"))}

# `iqpfr variant NAME` reads these sections plus `variants.NAME` (dvc.yaml's train_variant lists the same).
VARIANT_SECTIONS = ("data", "degrade", "vqgan", "transformer", "stage2")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="iqpfr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="run one pipeline stage")
    st.add_argument("name", choices=sorted(STAGES))
    st.add_argument("--params", default="params.yaml")
    tr = sub.add_parser("train", help="run a training stage directly (torchrun-aware)")
    tr.add_argument("name", choices=sorted(TRAIN))
    tr.add_argument("--params", default="params.yaml")
    va = sub.add_parser("variant", help="train stage II of one variant (params.yaml `variants`)")
    va.add_argument("name")
    va.add_argument("--params", default="params.yaml")
    se = sub.add_parser("seed", help="train stage II of one row with another seed (params.yaml `seeds`)")
    se.add_argument("row", help="iqpfr or a variant name")
    se.add_argument("seed", type=int)
    se.add_argument("--params", default="params.yaml")
    tk = sub.add_parser("task", help="run a stage of another task (e.g. underwater)")
    tk.add_argument("task", choices=sorted(TASK_WORLDS))
    tk.add_argument("name", choices=sorted(TASK_STAGES) + ["world", "variant"])
    tk.add_argument("--params", default="params.yaml")
    rs = sub.add_parser("restore", help="restore faces (or enhance images of another task): an image, a folder or a glob")
    rs.add_argument("input", help="image file, folder, or glob pattern (quote it)")
    rs.add_argument("-o", "--output", required=True, help="output folder (PNG files)")
    rs.add_argument("--task", default="face", choices=sorted(task.TASKS),
                    help="face (default): aligned faces or faces found in photos; underwater: whole images "
                         "of any size, enhanced in overlapping tiles")
    rs.add_argument("--checkpoint", default=None,
                    help="a bundle from `iqpfr export`, or a stage-II checkpoint (default: the task's, "
                         "e.g. models/stage2/restorer.pt)")
    rs.add_argument("--stage1", default=None,
                    help="for a stage-II checkpoint: the stage-I checkpoint it was trained on (default: the task's, "
                         "e.g. models/stage1/vqgan.pt)")
    rs.add_argument("--score", type=float, default=0.95, help="requested quality S in [0,1] (default 0.95)")
    rs.add_argument("--hq-weight", type=float, default=None, help="lambda for the HQ+ codes (default: as trained)")
    rs.add_argument("--guidance", type=float, default=None,
                    help="classifier-free guidance w of the score (models trained with transformer.score_dropout only; "
                         "1.0: plain conditioning). Default: the w a bundle records (iqpfr export), else params.yaml's "
                         "transformer.guidance (the w the evaluation runs the model at), else 1.0")
    rs.add_argument("--adain", action=argparse.BooleanOptionalAction, default=None,
                    help="AdaIN of the predicted codes to the input's latent statistics (default: the task's: on for "
                         "face and underwater, off for colour, where it would hand the input's cast or gray back)")
    rs.add_argument("--fidelity", type=float, default=0.0,
                    help="CodeFormer's fidelity weight w in [0, 1] (imported checkpoints with fusion blocks only; "
                         "default 0, as the IQPFR authors run their model)")
    rs.add_argument("--aligned", action="store_true", help="inputs are aligned faces (else: whole photographs)")
    rs.add_argument("--detector", default="dlib", choices=["dlib", "haar"],
                    help="whole-photo face detector: dlib HOG (default) or OpenCV Haar (upright faces only)")
    rs.add_argument("--align", default="landmarks", choices=["landmarks", "box"],
                    help="whole-photo alignment: 5-point landmarks with rotation (default) or the detected box")
    rs.add_argument("--upscale", type=int, default=1)
    rs.add_argument("--batch-size", type=int, default=8)
    rs.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    rs.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                    help="auto (default): bf16 on a CUDA GPU with bf16 or a CPU with AMX, fp32 elsewhere "
                         "(from the hardware's flags, never from a timing; see iqpfr/restore.py)")
    rs.add_argument("--suffix", default="", help="added to output file names")
    rs.add_argument("--save-comparison", action="store_true", help="also write input | output side by side")
    sc = sub.add_parser("score", help="NR-IQA scores of every image in a folder (streamed, cached, resumable; torchrun-aware)")
    sc.add_argument("folder")
    sc.add_argument("-o", "--output", required=True, help="CSV to write (file, sha256, one column per metric)")
    sc.add_argument("--metrics", nargs="+", default=["learned"], help="'learned' and/or pyiqa names (default: learned)")
    sc.add_argument("--prior", default="models/prior/iqanet.pt", help="the learned prior's checkpoint")
    sc.add_argument("--norm-stats", default=None,
                    help="normalisation statistics (e.g. data/scores/norm_stats.json): adds the ensemble score S")
    sc.add_argument("--size", type=int, default=None,
                    help="images are resized to SIZE x SIZE (default: the learned prior's training resolution, else 256)")
    sc.add_argument("--cache", default=None, help="score cache (default: OUTPUT.cache.jsonl and its per-rank shards)")
    sc.add_argument("--batch-size", type=int, default=32)
    sc.add_argument("--workers", type=int, default=2, help="DataLoader processes decoding images")
    sc.add_argument("--online", action="store_true", help="let pyiqa download missing weights")
    ex = sub.add_parser("export", help="write a trained restorer and its stage I into one file")
    ex.add_argument("-o", "--output", required=True, help="bundle file to write (e.g. iqpfr_default.pt)")
    ex.add_argument("--checkpoint", default="models/stage2/restorer.pt", help="stage-II checkpoint")
    ex.add_argument("--stage1", default="models/stage1/vqgan.pt", help="the stage-I checkpoint it was trained on")
    ex.add_argument("--guidance", type=float, default=None,
                    help="the score guidance w the bundle restores with by default (default: params.yaml's "
                         "transformer.guidance for a model trained with score dropout, else 1.0)")
    im = sub.add_parser("import-weights", help="map a released checkpoint (the IQPFR authors', CodeFormer's, "
                                                 "vqgan_code1024) onto iqpfr and write a bundle / stage-I checkpoint")
    im.add_argument("file", help="the released .pth file (read as data: tensors only)")
    im.add_argument("-o", "--output", required=True, help="file to write (a bundle for iqpir/codeformer, "
                                                          "a stage-I checkpoint for vqgan)")
    im.add_argument("--format", choices=("iqpir", "codeformer", "vqgan"), default=None,
                    help="the source's architecture (default: detected from its keys)")
    im.add_argument("--hq-weight", type=float, default=None,
                    help="iqpir: the HQ+ codebook's weight in the fused code (the authors' aesthetic_weight; default 0.5)")
    ev = sub.add_parser("evaluate", help="evaluate one restorer bundle (e.g. imported weights) on a test set")
    ev.add_argument("--checkpoint", required=True, help="a bundle (iqpfr export / iqpfr import-weights)")
    ev.add_argument("--set", default="data/testset/pairs", help="a test-set folder with a manifest (default: the pairs)")
    ev.add_argument("-o", "--output", default="reports/eval/checkpoint", help="folder for per-image CSVs and summaries")
    ev.add_argument("--score", type=float, default=None, help="S at test time (default: evaluation.score)")
    ev.add_argument("--fidelity", type=float, default=0.0, help="CodeFormer's w (fusion blocks only)")
    ev.add_argument("--count", type=int, default=None, help="only the first N images of the set")
    ev.add_argument("--name", default="model", help="the model's row name in the tables")
    ev.add_argument("--params", default="params.yaml", help="where the evaluation settings come from")
    ev.add_argument("--prior", default=str(pipeline.PRIOR), help="the learned prior's checkpoint (S and the prior agreement)")
    ev.add_argument("--norm-stats", default=str(pipeline.SCORES / "norm_stats.json"),
                    help="the prior's normalisation statistics (the score stage writes them)")
    ck = sub.add_parser("check-params", help="validate a params file")
    ck.add_argument("file", nargs="?", default="params.yaml")
    args = ap.parse_args(argv)
    if args.command == "restore":
        return _restore(args)
    if args.command == "score":
        return _score(args)
    if args.command == "import-weights":
        from .importweights import AUTHORS_HQ_WEIGHT, import_weights

        try:
            hq = AUTHORS_HQ_WEIGHT if args.hq_weight is None else args.hq_weight
            prov = import_weights(args.file, args.output, args.format, hq)
        except (FileNotFoundError, ValueError) as err:
            print(f"iqpfr import-weights: {err}", file=sys.stderr)
            return 2
        print(f"{args.file}: format {prov['source_format']} ({prov['source_weights']}), {len(prov['mapping'])} tensors "
              f"mapped, {len(prov['filled'])} filled; wrote {args.output}")
        for key, why in prov["filled"].items():
            print(f"  filled {key}: {why}")
        return 0
    if args.command == "evaluate":
        from .evalcheckpoint import evaluate_checkpoint

        try:
            result = evaluate_checkpoint(args.checkpoint, args.set, args.output, args.params, args.score, args.fidelity,
                                         args.count, args.name, prior=args.prior, norm_stats=args.norm_stats)
        except (FileNotFoundError, ValueError, ConfigError) as err:
            print(f"iqpfr evaluate: {err}", file=sys.stderr)
            return 2
        print(json.dumps(result["summaries"], indent=2, default=float))
        return 0
    if args.command == "export":
        from .restore import export_bundle

        try:
            print(json.dumps(export_bundle(args.checkpoint, args.stage1, args.output, args.guidance), indent=2, default=str))
        except (FileNotFoundError, ValueError, ConfigError) as err:
            print(f"iqpfr export: {err}", file=sys.stderr)
            return 2
        return 0
    try:
        if args.command == "check-params":
            load_params(args.file)
            print(f"{args.file}: ok")
            return 0
        params = load_params(args.params)
        runtime.configure()  # pinned threads, deterministic algorithms: reruns give the same bits
        if args.command == "task":
            with data.shared_pool():  # a world stage renders several sets: one pool of workers for all
                result = _task_stage(params, args.task, args.name)
        elif args.command == "variant":
            result = conditioned.train_variant(params, args.name)
        elif args.command == "seed":
            result = conditioned.train_seed(params, args.row, args.seed)
        else:
            fn, names = (STAGES if args.command == "stage" else TRAIN)[args.name]
            with data.shared_pool():
                result = fn(*[section(params, n) for n in names])
    except ConfigError as err:
        print(f"params error: {err}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # an input the params name, or an earlier stage's output, is missing
        print(f"iqpfr {' '.join(argv if argv is not None else sys.argv[1:])}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=float))
    return 0


def _task_stage(params, name: str, stage: str) -> dict:
    """One stage of task `name` with the task's params (its overrides applied)."""
    p, t = task_params(params, name), task.get(name)
    if stage == "world":
        fn, names = TASK_WORLDS[name]
        return fn(*[section(p, n) for n in names])
    if stage == "variant":  # the task's unconditioned baseline: a variant of the task's main model
        baseline = getattr(params, name).baseline
        return conditioned.train_variant(p, baseline, task=t, init=conditioned.finetune_source(params, name, baseline))
    if stage == "stage1" and t.shared_stage1 is not None:
        raise ConfigError(f"the {name} task reads another task's stage I ({t.shared_stage1}) and never trains one")
    fn, names = TASK_STAGES[stage]
    if stage == "stage2":
        return fn(*[section(p, n) for n in names], task=t, init=conditioned.finetune_source(params, name, "main"))
    return fn(*[section(p, n) for n in names], task=t)


def _score(args) -> int:
    """`iqpfr score`: exit 0 when every file was scored, 1 when some were rejected, 2 on a usage error."""
    from pathlib import Path

    from . import folderscore, iqanet, quality

    runtime.configure()
    try:
        size = args.size
        if size is None:
            size = iqanet.load(args.prior)[1].get("resolution", 256) if "learned" in args.metrics else 256
        if size < 8:
            raise ValueError(f"--size must be at least 8, got {size}")
        result = folderscore.score_folder(args.folder, args.output, args.metrics, size, args.prior, args.norm_stats,
                                          args.cache, args.batch_size, args.workers, offline=not args.online)
    except (FileNotFoundError, ValueError, quality.MissingWeightsError) as err:
        print(f"iqpfr score: {err}", file=sys.stderr)
        return 2
    if result.table or result.rejected:
        print(f"scored {len(result.table)} files at {size} px ({result.computed} computed, the rest from the cache) "
              f"in {result.seconds:.1f} s -> {Path(args.output)}")
        for f, reason in result.rejected:
            print(f"  rejected {f}: {reason}")
    return result.exit_code


def _restore(args) -> int:
    """`iqpfr restore`: exit 0 when every input was restored, 1 when some were skipped, 2 on a usage error."""
    for stream in (sys.stdout, sys.stderr):  # file names that are not valid UTF-8 are printed escaped
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    from pathlib import Path

    from .restore import (INFERENCE_BF16_FLAGS, INFERENCE_MEMORY_FORMAT, RestoreOptions, bf16_warning, default_guidance,
                          list_inputs, load_model_and_guidance, resolve_device, run)

    if not 0.0 <= args.score <= 1.0:
        print(f"--score must be in [0, 1], got {args.score}", file=sys.stderr)
        return 2
    if not 0.0 <= args.fidelity <= 1.0:
        print(f"--fidelity must be in [0, 1], got {args.fidelity}", file=sys.stderr)
        return 2
    t = task.get(args.task)
    if args.checkpoint is None:  # the task's own trained model
        args.checkpoint, args.stage1 = t.stage2, args.stage1 or t.stage1
    try:
        device = resolve_device(args.device)
        model, recorded = load_model_and_guidance(args.checkpoint, args.stage1)
        model = model.to(device, memory_format=INFERENCE_MEMORY_FORMAT)
        inputs = list_inputs(args.input)
        if args.fidelity > 0 and model.fidelity is None:
            raise ValueError(f"{args.checkpoint} has no fidelity (fusion) blocks: --fidelity needs an imported "
                             "CodeFormer-family checkpoint")
        if args.guidance is not None and args.guidance != 1.0 and not model.cfg.null_bin:
            raise ValueError(f"{args.checkpoint} was trained without score dropout (no 'no score' bin): "
                             "--guidance needs transformer.score_dropout > 0")
        guidance, source = ((args.guidance, "--guidance") if args.guidance is not None else
                            (recorded, "recorded in the bundle") if recorded is not None else default_guidance(model, task=t.name))
    except (FileNotFoundError, ValueError, ConfigError) as err:
        print(f"iqpfr restore: {err}", file=sys.stderr)
        return 2
    print(f"score S {args.score}, guidance {guidance} ({source})")
    prec = (precision.resolve("auto", device, bf16_flags=INFERENCE_BF16_FLAGS) if args.precision == "auto"
            else args.precision)
    print(f"device {device}, precision {prec}" + (" (auto)" if args.precision == "auto" else ""))
    warning = bf16_warning(device, prec, precision.cpu_flags())
    if warning:
        print(f"iqpfr restore: warning: {warning}", file=sys.stderr)
    opts = RestoreOptions(score=args.score, hq_weight=args.hq_weight, fidelity=args.fidelity, guidance=guidance,
                          adain=t.adain if args.adain is None else args.adain,
                          aligned=args.aligned, upscale=args.upscale,
                          batch_size=args.batch_size, device=args.device, precision=prec,
                          suffix=args.suffix, save_comparison=args.save_comparison, detector=args.detector,
                          align=args.align, tiled=t.whole_images)
    try:
        summary = run(inputs, Path(args.output), model, opts, device)
    except ValueError as err:  # e.g. a precision the device does not support
        print(f"iqpfr restore: {err}", file=sys.stderr)
        return 2
    for f, note in summary.notes:
        print(f"  {f}: {note}")
    print(f"restored {len(summary.restored)}, skipped {len(summary.skipped)}")
    for f, reason in summary.skipped:
        print(f"  skipped {f}: {reason}")
    return summary.exit_code


if __name__ == "__main__":
    sys.exit(main())
