"""Which prior design does the continuous counter-example not fool? A diagnostic.

`prior_spearman_on_outputs` (notebook 04) is the minimum over restorer rows of Spearman(prior
score, true quality) over the rows' test outputs at S = 0.95. On the 32 x 32-token rows its minimum
is the continuous counter-example's latent decoding G(z_l): its quality loss drives the prior's
score of G(z_l) to the ceiling while the true quality does not follow. A prior only passes that row
if over-optimising it does not pay. This measures it for candidate prior designs, each trained on
the pipeline prior's own data (the IQA training split and the helper restorer's labelled outputs,
data/iqa_helper: no training GT, no test pair) and normalised over the training GTs as the score
stage normalises it:

1. the trained `no_quality_loss` row (stage II without any quality loss: it never saw a prior) is
   fine-tuned for --steps steps with the continuous quality loss against the candidate
   (`quality_mode: continuous`, the params' `quality_weight`, on from step 0); the pipeline's
   continuous row trains 1000 steps from stage I with it on from step 200;
2. its latent decoding G(z_l) (raw weights) on the test pairs at S = 0.95 is scored by the candidate,
   before and after, against its true quality (SSIM to the pristine face);
3. the candidate also scores every committed restorer row's outputs (notebook 04's rows).

`--designs` are overrides of params.yaml `prior` ("" is the pipeline's own recipe, loaded from
models/prior/iqanet.pt rather than retrained; `ensemble=N`: N seeds of the recipe, their normalised
scores averaged; `harden=R`: R rounds of over-optimised helper restorations added to the prior's data,
benchmarks/prior_hardening.py). Not a pipeline stage: adopting a design retrains every stage after the prior
(about 3 hours on 2 cores).

    python benchmarks/prior_overoptimisation.py --root <a project after dvc repro> --designs "" input_pool=2 ensemble=3

Writes reports/experiments/prior_overoptimisation/prior_overoptimisation.csv (one row per design
and fine-tuning length).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.prior_adversarial import test_outputs
from benchmarks.prior_hardening import (
    Hardening,
    helper_model,
    iqa_split,
    over_optimised,
)
from benchmarks.prior_on_outputs import fit_prior
from benchmarks.prior_on_outputs import true_quality as ssim_oracle
from iqpfr import evaluate, iqanet, quality, runtime
from iqpfr.conditioned import load_restorer, stage2_trainer
from iqpfr.config import load_params, variant
from iqpfr.helper import helper_set
from iqpfr.pipeline import _load_stack
from iqpfr.task import FACE

SCORE = 0.95
START = "no_quality_loss"  # the row fine-tuned against each candidate: trained without any prior


def parse_design(text: str, prior) -> tuple[str, object, int, Hardening | None]:
    """"key=value,key=value" overrides of a PriorConfig -> (label, config, members, hardening); "" is
    the pipeline's. The key `ensemble=N` asks for N priors of that recipe with seeds seed .. seed +
    N - 1, their normalised scores averaged (as the score stage averages an ensemble's members);
    `harden=R` for R rounds of over-optimised helper outputs (benchmarks/prior_hardening.py), whose
    settings `harden_<field>=value` change (e.g. harden_weight=0.5)."""
    if not text:
        return "pipeline", prior, 1, None
    changes, members, hardening = {}, 1, {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == "ensemble":
            members = int(value)
        elif key == "harden" or key.startswith("harden_"):
            field = "rounds" if key == "harden" else key.removeprefix("harden_")
            if not hasattr(Hardening, field):
                raise SystemExit(f"unknown hardening key {key!r} in design {text!r}")
            hardening[field] = type(getattr(Hardening(), field))(value)
        elif hasattr(prior, key):
            changes[key] = type(getattr(prior, key))(value)
        else:
            raise SystemExit(f"unknown prior key {key!r} in design {text!r}")
    if hardening and members > 1:
        raise SystemExit(f"design {text!r}: hardening and an ensemble are not combined")
    return text, replace(prior, **changes), members, Hardening(**hardening) if hardening else None


class MeanQuality(torch.nn.Module):
    """The mean of several normalised priors' Q(x): (B, 3, R, R) in [0, 1] -> (B,)."""

    def __init__(self, members: list[quality.DifferentiableQuality]):
        super().__init__()
        self.members = torch.nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([q(x) for q in self.members]).mean(0)


def candidate(prior, members: int, hardening: Hardening | None, params, gts: torch.Tensor, tmp: Path):
    """The candidate's differentiable Q: the pipeline's prior where its settings (`params.prior`,
    seed included) are asked for (loaded, not retrained), else trained here; an ensemble is the mean
    of its members; a hardened prior starts from the plain one. `gts` (N, 3, R, R): the training GTs
    each prior is normalised over."""
    qs = []
    for i in range(members):
        p = replace(prior, seed=prior.seed + i)
        path = FACE.prior if p == params.prior else saved(train_candidate(p), p, tmp)
        if hardening is not None:
            path = harden(path, p, hardening, params, gts, tmp)
        qs.append(differentiable(path, gts))
    return qs[0] if members == 1 else MeanQuality(qs)


def saved(net: iqanet.IqaNet, prior, tmp: Path) -> Path:
    path = tmp / f"prior_{len(list(tmp.glob('prior_*.pt')))}.pt"
    iqanet.save(path, net, {"settings": str(prior)})
    return path


def pipeline_prior_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline prior's training data: the IQA split + the helper's outputs, (N, 3, R, R) and (N,)."""
    x, df = _load_stack(FACE.iqa / "train")
    q = torch.tensor(df["true_quality"].to_numpy(), dtype=torch.float32)
    extra = helper_set()
    if extra is not None:
        x, q = torch.cat([x, extra[0]]), torch.cat([q, torch.tensor(extra[1], dtype=torch.float32)])
    return x, q


def train_candidate(prior) -> iqanet.IqaNet:
    """`fit_prior` with `prior`'s settings on the pipeline prior's data."""
    return fit_prior(prior, *pipeline_prior_data()).eval()


def harden(path: Path, prior, h: Hardening, params, gts: torch.Tensor, tmp: Path) -> Path:
    """R rounds of benchmarks/prior_hardening.py starting from the prior at `path`; the last round's prior."""
    x, q = pipeline_prior_data()
    x_iqa, oracle, q_iqa = iqa_split()
    helper = helper_model(params, x_iqa, q_iqa)
    for r in range(h.rounds):
        t0 = time.time()
        xa, qa = over_optimised(helper, differentiable(path, gts), x_iqa, oracle, params, h, params.helper.seed + 1 + r)
        x, q = torch.cat([x, xa]), torch.cat([q, torch.tensor(qa, dtype=torch.float32)])
        path = saved(fit_prior(prior, x, q).eval(), prior, tmp)
        print(f"hardening round {r + 1}: {len(xa)} over-optimised helper outputs, prior trained on {len(x)} "
              f"images ({time.time() - t0:.0f} s)", flush=True)
    return path


def differentiable(path: Path, gts: torch.Tensor) -> quality.DifferentiableQuality:
    """Q(x) of the prior at `path`, min-max normalised over the training GTs `gts` (N, 3, R, R) in
    [0, 1] (the score stage's map)."""
    metric = quality.make_metric("learned", "cpu", path, as_loss=True)
    with torch.no_grad():
        raw = torch.cat([metric(gts[i:i + 64]) for i in range(0, len(gts), 64)]).numpy()
    stats = quality.NormStats.fit({"learned": raw}, {"learned": metric}, ["learned"])
    return quality.DifferentiableQuality([metric], stats)


@torch.no_grad()
def judged(q: torch.nn.Module, x: torch.Tensor, truth: np.ndarray) -> dict:
    """How the prior judges outputs x (N, 3, R, R) whose true quality is `truth` (N,)."""
    s = torch.cat([q(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy()
    return {"spearman": iqanet.spearman(s, truth), "mean_S": float(s.mean()), "at_ceiling": float((s >= 0.999).mean()),
            "true_quality": float(truth.mean())}


@torch.no_grad()
def latent_decoding(model, lq: torch.Tensor) -> torch.Tensor:
    model.eval()
    return torch.cat([model.restore(lq[i:i + 64], SCORE, continuous=True) for i in range(0, len(lq), 64)])


def over_optimiser(params, q, steps: int, tmp: Path, progress=print):
    """The trainer that fine-tunes the START row up to `steps` steps with the continuous quality loss
    against q (not yet run: `train(until=k)` runs it to step k)."""
    p = variant(params, "continuous")
    s2 = replace(p.stage2, steps=steps, quality_start=0, checkpoint_every=steps, log_every=max(steps // 10, 1))
    trainer = stage2_trainer(p.data, p.degrade, p.vqgan, p.transformer, s2, tmp / "run.pt", progress, FACE,
                             FACE.variants / START / "restorer.pt")
    trainer.q = q
    return trainer


def log_line(r: dict) -> str:
    return f"  step {r['step']}: quality loss {r['quality']:.3f}, Q {r['q_mean']:.3f}, {r['seconds']:.2f} s/step"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", default=str(ROOT), help="the project whose data and models are measured")
    ap.add_argument("--designs", nargs="+", default=["", "input_pool=2"], help="overrides of params.yaml prior")
    ap.add_argument("--steps", type=int, nargs="+", default=[200],
                    help="fine-tuning steps against each candidate; several: snapshots of one run, one row each")
    ap.add_argument("--out", default=str(ROOT / "reports/experiments/prior_overoptimisation/prior_overoptimisation.csv"))
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    os.chdir(args.root)  # the tasks' paths are relative to the project
    runtime.configure()
    params = load_params("params.yaml")
    test = evaluate.load_set(Path("data/testset/pairs"))
    committed = test_outputs(Path("."), params, test["lq"])
    truth = {r: ssim_oracle(x, test["oracle"]) for r, x in committed.items()}
    gts, _ = _load_stack(FACE.world / "train")
    xv, dv = _load_stack(FACE.iqa / "val")
    start, _ = load_restorer(FACE.variants / START / "restorer.pt", FACE.stage1, ema=False)  # where fine-tuning starts
    before = latent_decoding(start, test["lq"])
    before_truth = ssim_oracle(before, test["oracle"])
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for text in args.designs:
            t0 = time.time()
            label, prior, members, hardening = parse_design(text, params.prior)
            q = candidate(prior, members, hardening, params, gts, tmp)
            seconds_prior = time.time() - t0
            row = {"design": label, "prior_seconds": round(seconds_prior, 1)}
            row["spearman_iqa_val"] = judged(q, xv, dv["true_quality"].to_numpy())["spearman"]
            for r, x in committed.items():
                row[f"committed_{r}"] = judged(q, x, truth[r])["spearman"]
            row.update({f"before_{k}": v for k, v in judged(q, before, before_truth).items()})
            trainer = over_optimiser(params, q, max(args.steps), tmp / f"{len(rows)}")
            t1 = time.time()
            for k in sorted(args.steps):
                trainer.train(until=k, progress=lambda r: print(log_line(r), flush=True))
                seconds = time.time() - t1
                after = latent_decoding(trainer.m, test["lq"])
                rows.append({**row, "steps": k, "finetune_seconds": round(seconds, 1),
                             **{f"after_{m}": v for m, v in judged(q, after, ssim_oracle(after, test["oracle"])).items()}})
            print(pd.DataFrame(rows).set_index(["design", "steps"]).T.round(3).to_string(), flush=True)
    table = pd.DataFrame(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False, float_format="%.6g")
    return table


if __name__ == "__main__":
    main()
