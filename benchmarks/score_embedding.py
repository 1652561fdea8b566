"""Does an ordinal parametrisation of the score embedding let the S knob reach further?

The main model adds Emb[bin] (one latent-sized map per score bin, zero-initialised) to the LQ latent
(SPEC 1.4, eq. 12). Each map learns only from the GTs of its own bin, and the face world's GTs are
skewed to the top: bins 0-3 hold about 8% of them (`training_gts_per_bin` in
reports/metrics/train_conditioned.json). So the low bins' maps barely move in 500 steps, and the
outputs at S = 0.05 hardly differ from those at S = 0.5 (`benchmarks/knob_diagnosis.py`).

The *ordinal* design keeps a table of ten maps at inference, but learns it as

    Emb[k] = R[k] + c_k D,    c_k = (k - 4.5) / 4.5 in [-1, 1],    k = 0 ... 9

(the "no score" bin of classifier-free guidance keeps its own map and no trend). D, one map shared
by every bin, learns from every GT the direction along which the targets change with quality; the
rare low bins then sit at -D from the top bins instead of near zero. It is the same function class
(any table is some R), a different optimisation: our choice, not the paper's. The design "ordinal
trend only" drops R (Emb[k] = c_k D): the score can then only move the latent along one direction.

The script trains the main model (params.yaml, `stage2` and `transformer` as the pipeline trains
it, same data, and the same seed unless --seed) with each design of --designs in a temporary folder
("table" retrains the paper's design, to compare seeds), then measures them and the
pipeline's `models/stage2/restorer.pt` on the held-out GTs exactly as `benchmarks/guidance.py` does
(true quality = SSIM to the pristine oracle, and the learned prior's score, at S = 0.05, 0.5 and
0.95 for each guidance w). The trend is the package's `transformer.score_trend`; the trend-only
design is patched into this script's process only.

    python benchmarks/score_embedding.py --designs "table + ordinal trend" "ordinal trend only"   # ~22 min on 2 cores
    python benchmarks/score_embedding.py --designs table "table + ordinal trend" --seed 1   # another stage-II seed

Writes reports/metrics/score_embedding.csv (one row per design, seed and w; a (design, seed)'s rows
replace its earlier ones, the others are kept). Not a pipeline stage.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from guidance import holdout_lq, mean_ssim, sweep  # noqa: E402
from iqpfr import evaluate, provenance, runtime, transformer  # noqa: E402
from iqpfr.conditioned import load_restorer, train_conditioned  # noqa: E402
from iqpfr.config import load_params  # noqa: E402
from iqpfr.pipeline import WORLD, _load_stack, degrade_ranges  # noqa: E402
from iqpfr.task import FACE  # noqa: E402
from iqpfr.transformer import NUM_BINS  # noqa: E402


PIPELINE = {False: "table (pipeline)", True: "table + ordinal trend (pipeline)"}  # the trained model's row, by its score_trend
# design -> (transformer.score_trend, whether score bins 0-9 keep maps of their own beside the trend)
DESIGNS = {"table": (False, True), "table + ordinal trend": (True, True), "ordinal trend only": (True, False)}


@contextmanager
def trend_only():
    """Inside the block, score bins 0-9 of every CodeTransformer with a trend use it alone
    (Emb[k] = c_k D; the "no score" bin keeps its own map); the class is restored on exit."""
    plain = transformer.CodeTransformer.embedding

    def embedding(self, bins):
        if self.score_map_trend is None:
            return plain(self, bins)
        trend = transformer.ordinal_coefficients(bins).view(-1, 1, 1, 1) * self.score_map_trend
        return torch.where((bins < NUM_BINS).view(-1, 1, 1, 1), trend, self.score_map[bins])

    transformer.CodeTransformer.embedding = embedding
    try:
        yield
    finally:
        transformer.CodeTransformer.embedding = plain


def main(argv: list[str] | None = None) -> pd.DataFrame:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    ap.add_argument("--steps", type=int, default=None, help="stage-II steps (default: params.yaml's)")
    ap.add_argument("--designs", nargs="+", choices=sorted(DESIGNS), default=["table + ordinal trend"])
    ap.add_argument("--seed", type=int, default=None, help="stage-II seed of the trained designs (default: params.yaml's)")
    ap.add_argument("--out", default=str(ROOT / "reports/metrics/score_embedding.csv"))
    args = ap.parse_args(argv)
    runtime.configure()
    params = load_params(ROOT / "params.yaml")
    out = Path(args.out)
    try:
        provenance.require_world(out, params.data)  # rows of one world per file
    except ValueError as err:
        sys.exit(str(err))
    s2 = replace(params.stage2, steps=args.steps or params.stage2.steps,
                 seed=params.stage2.seed if args.seed is None else args.seed)
    gts, _ = _load_stack(ROOT / WORLD / "holdout")
    oracle, _ = _load_stack(ROOT / WORLD / "holdout", "oracle_file")
    lq = holdout_lq(gts, degrade_ranges(params.degrade))
    prior = evaluate.Judges.load(ROOT / FACE.scores / "norm_stats.json", ROOT / FACE.prior, [], params.evaluation.judge_size,
                                 params.scoring.offline)
    tables = []
    pipeline, done = load_restorer(ROOT / "models/stage2/restorer.pt", ROOT / "models/stage1/vqgan.pt")
    tables.append(sweep(pipeline, lq, oracle, args.weights, prior.prior_score).assign(
        design=PIPELINE[pipeline.cfg.score_trend], steps=done["step"], seed=done["train_config"]["seed"]))
    print(tables[-1].round(4).to_string(index=False), flush=True)
    for design in args.designs:
        with_trend, own_maps = DESIGNS[design]
        tp = replace(params.transformer, score_trend=with_trend)
        with nullcontext() if own_maps else trend_only(), tempfile.TemporaryDirectory() as tmp:
            ckpt = Path(tmp) / "restorer.pt"
            info = train_conditioned(params.data, params.degrade, params.vqgan, tp, s2,
                                     checkpoint=ckpt, log_csv=Path(tmp) / "log.csv")
            model, _ = load_restorer(ckpt, ROOT / "models/stage1/vqgan.pt")
            per_bin = model.transformer.score_map.detach()[:NUM_BINS].flatten(1).pow(2).mean(1).sqrt()
            trend = model.transformer.score_map_trend
            trend = torch.zeros(()) if trend is None else trend.detach()
            print(f"{design}: {info['steps']} steps in {info['seconds_this_run']:.0f} s; rms of the trend map "
                  f"{trend.pow(2).mean().sqrt():.4f}, of the per-bin maps {per_bin.numpy().round(4).tolist()}", flush=True)
            tables.append(sweep(model, lq, oracle, args.weights, prior.prior_score).assign(design=design,
                                                                                           steps=info["steps"], seed=s2.seed))
    print(f"{len(gts)} held-out GTs; LQ {mean_ssim(lq, oracle):.4f}, GT {mean_ssim(gts, oracle):.4f} SSIM to the oracle")
    table = pd.concat(tables, ignore_index=True)
    table.insert(0, "seed", table.pop("seed"))
    table.insert(0, "steps", table.pop("steps"))
    table.insert(0, "design", table.pop("design"))
    print(table.round(4).to_string(index=False))
    table = merge(pd.read_csv(out) if out.exists() else None, table)
    table.to_csv(out, index=False, float_format="%.6g")
    provenance.write(out, params.data, provenance.sections_of(params), provenance.command("benchmarks/score_embedding.py", argv),
                     merged=True)
    return table


def merge(old: pd.DataFrame | None, new: pd.DataFrame) -> pd.DataFrame:
    """`new`'s rows replace the rows of the same (design, seed) in `old`, the others are kept;
    sorted by seed, design (the pipeline's model first, then DESIGNS' order) and w."""
    table = new
    if old is not None:
        pairs = set(zip(new["design"], new["seed"]))
        table = pd.concat([old[[k not in pairs for k in zip(old["design"], old["seed"])]], new], ignore_index=True)
    order = {d: i for i, d in enumerate([*PIPELINE.values(), *DESIGNS])}
    return table.sort_values(["seed", "design", "guidance"], key=lambda c: c.map(order) if c.name == "design" else c,
                             ignore_index=True)


if __name__ == "__main__":
    main()
