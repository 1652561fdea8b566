"""Does the helper restorer harden the prior, and how far could a no-reference prior go? Measured.

`prior_spearman_on_outputs` (notebook 04) is, per restorer row, Spearman(prior score, true
quality) over its outputs at S = 0.95 on the test pairs. Three priors of the same network and
recipe (params.yaml `prior`), scored on the same outputs of the pipeline's trained rows:

  iqa_only  trained on the IQA training split alone (capture flaws and the procedural
            restorer-like artefacts): the prior before the helper (helper.steps: 0);
  pipeline  the pipeline's prior (models/prior/iqanet.pt): the IQA split plus the helper
            restorer's labelled outputs (iqpfr/helper.py);
  probe     trained on the IQA training split plus the outputs of the
           trained main and baseline rows on a *probe* set: fresh synthetic faces (their own seed,
           never a training GT nor a test pair), captured and degraded as the test pairs are,
           labelled with the outputs' true quality (SSIM to the pristine render).

The probe prior is a diagnostic, never a pipeline stage: a prior trained on the restorers' outputs
would make the pipeline a cycle (the prior labels stage I's and stage II's training data). If even
it ranks the outputs weakly, the outputs' remaining quality differences are ones no image-only judge
of this size sees (fidelity to a face it never saw), and hardening the prior's training data cannot
reach the threshold.

    python benchmarks/prior_on_outputs.py            # after dvc repro; about 5 minutes on 2 cores

Writes reports/metrics/prior_on_outputs.csv (one row per prior and restorer row).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from iqpfr import data, evaluate, iqanet, provenance, runtime  # noqa: E402
from iqpfr.conditioned import load_restorer  # noqa: E402
from iqpfr.config import guidance_by_row, load_params  # noqa: E402
from iqpfr.pipeline import _load_stack, capture_ranges, degrade_ranges, gt_distribution  # noqa: E402

ROWS = ("iqpfr", "baseline", "baseline_plus", "no_quality_loss")
PROBE_ROWS = ("iqpfr", "baseline")  # the rows whose probe outputs the probe prior trains on
SCORE = 0.95


def restorer_path(root: Path, row: str) -> Path:
    return root / ("models/stage2/restorer.pt" if row == "iqpfr" else f"models/variants/{row}/restorer.pt")


def measured_models() -> list[str]:
    """The pipeline's models whose outputs and scores the table describes (paths in the project):
    notebook 04 shows the table only while they are the models it evaluates (iqpfr.provenance)."""
    return ["models/prior/iqanet.pt", "models/stage1/vqgan.pt",
            *(str(restorer_path(Path(), r)) for r in ROWS)]


def true_quality(x: torch.Tensor, oracle: torch.Tensor) -> np.ndarray:
    """SSIM to the oracle (notebook 04's `ssim_oracle`) of images (N, 3, R, R) in [0,1]: (N,)."""
    return np.array([evaluate.ssim(a.permute(1, 2, 0).numpy(), b.permute(1, 2, 0).numpy()) for a, b in zip(x, oracle)])


@torch.no_grad()
def outputs(models: dict, lq: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each row's outputs at S = 0.95 (with the row's own guidance) for LQ (N, 3, R, R): {row: (N, 3, R, R)}."""
    return {r: torch.cat([m.restore(lq[i:i + 64], SCORE) for i in range(0, len(lq), 64)])
            for r, m in models.items()}


def probe_set(params, count: int, seed: int, tmp: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh faces captured like the world's GTs and degraded like the test pairs: (LQ, oracle), each (N, 3, R, R)."""
    d = params.data
    data.write_synthetic_set(tmp / "hq", "test", count, seed, d.resolution, gt_distribution(params.capture),
                             capture_ranges(params.capture), workers=d.workers)
    data.build_pairs(tmp / "hq", tmp / "pairs", degrade_ranges(params.degrade), seed)
    lq, _ = _load_stack(tmp / "pairs", "file")
    oracle = torch.stack([torch.from_numpy(data.load_png(tmp / "hq" / f)).permute(2, 0, 1)
                          for f in data.read_manifest(tmp / "hq")["oracle_file"]])
    return lq, oracle


def fit_prior(prior, x: torch.Tensor, q: torch.Tensor, evals: dict | None = None) -> iqanet.IqaNet:
    """The pipeline's recipe (pipeline.train_prior, synthetic source) with `prior`'s settings
    (params.yaml `prior`) on images x (N, 3, R, R) in [0, 1] labelled q (N,); `evals` as
    iqanet.train_regression takes them (only reported)."""
    torch.manual_seed(prior.seed)
    net = iqanet.IqaNet(iqanet.IqaNetConfig(width=prior.width, mode="regression", input_pool=prior.input_pool))
    iqanet.train_regression(net, x, q, prior.epochs, prior.batch_size, prior.lr, prior.seed, evals or {},
                            log=lambda line: None)
    return net


def train_prior(prior, images: list[torch.Tensor], labels: list[np.ndarray], xv: torch.Tensor, dv: pd.DataFrame):
    """`fit_prior` on the concatenated images (N, 3, R, R) and labels (N,), validated on (xv, dv)."""
    return fit_prior(prior, torch.cat(images), torch.tensor(np.concatenate(labels), dtype=torch.float32),
                     {"val": (xv, dv["true_quality"].to_numpy())})


def agreement(net, outs: dict[str, torch.Tensor], truth: dict[str, np.ndarray]) -> dict[str, float]:
    return {r: iqanet.spearman(iqanet.predict(net, x), truth[r]) for r, x in outs.items()}


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", type=int, default=600, help="probe faces (each gives one output per probe row)")
    ap.add_argument("--seed", type=int, default=7001, help="the probe faces' world seed (the pipeline's is data.seed)")
    ap.add_argument("--root", default=str(ROOT), help="the project whose models and data are measured")
    args = ap.parse_args(argv)
    root = Path(args.root)
    runtime.configure()
    params = load_params(root / "params.yaml")
    if args.seed == params.data.seed:
        sys.exit("--seed must differ from data.seed: the probe faces must not be the world's")
    t0 = time.time()
    test = evaluate.load_set(root / "data/testset/pairs")
    if "oracle" not in test:
        sys.exit("the test pairs have no pristine faces (testset.hq_folder): true quality, and with it this "
                 "measurement, needs the synthetic test set")
    guidance = guidance_by_row(params.transformer, params.variants)
    models = {r: load_restorer(restorer_path(root, r), root / "models/stage1/vqgan.pt", guidance=guidance[r])[0]
              for r in ROWS}
    test_out = outputs(models, test["lq"])
    test_truth = {r: true_quality(x, test["oracle"]) for r, x in test_out.items()}

    pipeline_prior, _ = iqanet.load(root / "models/prior/iqanet.pt")
    x, df = _load_stack(root / "data/iqa/train")
    xv, dv = _load_stack(root / "data/iqa/val")
    nets = {"iqa_only": train_prior(params.prior, [x], [df["true_quality"].to_numpy()], xv, dv),
            "pipeline": pipeline_prior}

    with tempfile.TemporaryDirectory() as tmp:
        lq, oracle = probe_set(params, args.probe, args.seed, Path(tmp))
    probe_out = outputs({r: models[r] for r in PROBE_ROWS}, lq)
    nets["probe"] = train_prior(params.prior, [x] + [probe_out[r] for r in PROBE_ROWS],
                                [df["true_quality"].to_numpy()] + [true_quality(probe_out[r], oracle) for r in PROBE_ROWS],
                                xv, dv)
    rows = [{"prior": name, "row": r, "spearman": v} for name, net in nets.items()
            for r, v in agreement(net, test_out, test_truth).items()]
    val = {name: iqanet.spearman(iqanet.predict(net, xv), dv["true_quality"]) for name, net in nets.items()}

    table = pd.DataFrame(rows).pivot(index="prior", columns="row", values="spearman").loc[list(nets), list(ROWS)]
    table["min"] = table.min(axis=1)
    table["iqa_val"] = pd.Series(val)
    print(f"Spearman(prior score, SSIM to the oracle) over each row's {len(test['lq'])} test outputs at S = {SCORE}; "
          f"the probe prior trained on {len(x)} IQA images + {args.probe} x {len(PROBE_ROWS)} probe outputs "
          f"({time.time() - t0:.0f} s)")
    print(table.round(3).to_string())
    out = root / "reports/metrics/prior_on_outputs.csv"
    table.to_csv(out, float_format="%.6g")
    provenance.write(out, params.data, provenance.sections_of(params), provenance.command("benchmarks/prior_on_outputs.py", argv),
                     models=measured_models(), root=root)
    return table


if __name__ == "__main__":
    main()
