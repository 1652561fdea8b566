"""`iqpfr` command line: the pipeline's non-notebook stages.

Each stage command reads exactly the params sections declared in STAGES (dvc.yaml lists the
same sections; a test checks it) and calls the matching function of `iqpfr.pipeline`.

    iqpfr stage world          # training GTs (synthetic world or ingested folder)
    iqpfr stage iqa_data       # data for the learned NR-IQA prior
    iqpfr stage train_prior    # train the learned NR-IQA
    iqpfr stage testset        # seeded LQ/HQ test pairs and real LQ folders
    iqpfr stage latent_targets # code indices of every GT under the frozen stage-I model
    torchrun --nproc_per_node 3 -m iqpfr.cli train stage1   # stage I on 3 GPUs (then dvc repro)
    iqpfr check-params [FILE]  # validate a params file (e.g. profiles/paper.yaml)
"""
from __future__ import annotations

import argparse
import json
import sys

from . import codebook, conditioned, pipeline
from .config import ConfigError, load_params, section

STAGES = {
    "world": (pipeline.build_world, ("data", "capture")),
    "iqa_data": (pipeline.build_iqa_sets, ("data", "capture", "iqa")),
    "train_prior": (pipeline.train_prior, ("data", "iqa", "prior")),
    "testset": (pipeline.build_testset, ("data", "capture", "degrade", "testset")),
    "latent_targets": (codebook.latent_targets, ("data", "vqgan")),
}

# Training entry points for torchrun (multi-GPU / multi-node); the notebook stages call the same
# functions and resume from (or reuse) the checkpoint these write.
TRAIN = {
    "stage1": (codebook.train_codebook, ("data", "vqgan", "stage1")),
    "stage2": (conditioned.train_conditioned, ("data", "degrade", "vqgan", "transformer", "stage2")),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="iqpfr", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    st = sub.add_parser("stage", help="run one pipeline stage")
    st.add_argument("name", choices=sorted(STAGES))
    st.add_argument("--params", default="params.yaml")
    tr = sub.add_parser("train", help="run a training stage directly (torchrun-aware)")
    tr.add_argument("name", choices=sorted(TRAIN))
    tr.add_argument("--params", default="params.yaml")
    ck = sub.add_parser("check-params", help="validate a params file")
    ck.add_argument("file", nargs="?", default="params.yaml")
    args = ap.parse_args(argv)
    try:
        if args.command == "check-params":
            load_params(args.file)
            print(f"{args.file}: ok")
            return 0
        params = load_params(args.params)
        fn, names = (STAGES if args.command == "stage" else TRAIN)[args.name]
        result = fn(*[section(params, n) for n in names])
    except ConfigError as err:
        print(f"params error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
