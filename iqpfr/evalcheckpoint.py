"""`iqpfr evaluate`: one restorer (a bundle, e.g. imported released weights) on a test set, without training.

The same metrics and conventions as the evaluation stage (iqpfr.evaluate, notebook 04): the prior's
score S and the held-out judges, PSNR/SSIM (and LPIPS, identity, FID where available) to the GT
and, on synthetic pairs, to the pristine oracle; per-image CSVs and summary JSONs per row (`lq`,
the model, `gt`) in <out>/<set>/.

A model whose resolution differs from the set's (an imported 512 px model on the default profile's
64 px faces) sees the LQ resized to its resolution (bicubic) and its outputs resized back to the
set's (area averaging) before any metric: the summary records both sizes. On such a set the
numbers say how the model does on small faces, not what it does at its own size.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import evaluate as ev
from .comparison import _optional_metrics, prior_agreement
from .config import load_params, section
from .pipeline import PRIOR, SCORES


@torch.no_grad()
def restore_at_model_size(model, lq: torch.Tensor, score: float, fidelity: float, batch: int,
                          progress=print, guidance: float = 1.0) -> torch.Tensor:
    """LQ (N, 3, r, r) in [0,1] -> outputs (N, 3, r, r) in [0,1], run at the model's resolution R."""
    size = model.stage1.cfg.resolution
    outs = []
    for i in range(0, len(lq), batch):
        x = lq[i:i + batch]
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
        y = model.restore(x, score, fidelity=fidelity, guidance=guidance)
        if y.shape[-1] != lq.shape[-1]:
            y = F.interpolate(y, size=lq.shape[-2:], mode="area")
        outs.append(y.clamp(0, 1))
        progress(f"restored {min(i + batch, len(lq))}/{len(lq)}")
    return torch.cat(outs)


def evaluate_checkpoint(checkpoint: str | Path, set_dir: str | Path, out_dir: str | Path, params_file: str = "params.yaml",
                        score: float | None = None, fidelity: float = 0.0, count: int | None = None,
                        name: str = "model", progress=print, guidance: float | None = None,
                        prior: str | Path = PRIOR, norm_stats: str | Path = SCORES / "norm_stats.json") -> dict:
    """Evaluate the bundle `checkpoint` on the test set in `set_dir`; returns the summaries per row.
    `guidance` None: the w the bundle records (`iqpfr export`), else the params' transformer.guidance
    for a model trained with score dropout (as the evaluation stage runs it), 1.0 for one without a
    "no score" bin (e.g. imported weights); printed.
    `prior` and `norm_stats` are the judges' files: by default the pipeline's (`train_prior` and
    `score` write them), relative to the working directory."""
    from .restore import load_model_and_guidance

    t0 = time.time()
    params = load_params(params_file)
    data_cfg, evaluation, scoring = (section(params, n) for n in ("data", "evaluation", "scoring"))
    needed = {"the score normalisation": norm_stats, **({"the learned prior": prior} if "learned" in scoring.metrics else {})}
    for what, path in needed.items():
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} {path} does not exist: run in the project root after `dvc repro` "
                                    "(stages train_prior and score), or name the files with --prior and --norm-stats")
    model, recorded = load_model_and_guidance(checkpoint)
    images = ev.load_set(Path(set_dir))
    if count is not None:
        images = {k: v[:count] for k, v in images.items()}
    judges = ev.Judges.load(Path(norm_stats), Path(prior), evaluation.judges, evaluation.judge_size, scoring.offline)
    lpips_fn, identity, fid, unavailable = _optional_metrics(data_cfg, evaluation)
    unavailable.update(judges.unavailable)
    s = evaluation.score if score is None else score
    if guidance is None:
        guidance = recorded if recorded is not None else section(params, "transformer").guidance if model.cfg.null_bin else 1.0
    progress(f"restoring at S = {s}, guidance {guidance}")
    outputs = {"lq": images["lq"], name: restore_at_model_size(model, images["lq"], s, fidelity, evaluation.batch_size,
                                                               progress, guidance)}
    if "gt" in images:
        outputs["gt"] = images["gt"]
    set_name = Path(set_dir).name
    summaries, tables = ev.evaluate_set(set_name, images, outputs, judges, lpips_fn, identity, fid,
                                        out_dir=Path(out_dir), progress=progress)
    result = {"checkpoint": str(checkpoint), "set": str(set_dir), "score": s, "fidelity": fidelity, "guidance": guidance,
              "model_resolution": model.stage1.cfg.resolution, "set_resolution": int(images["lq"].shape[-1]),
              "summaries": summaries, "prior_agreement": prior_agreement(tables), "unavailable": unavailable,
              "conventions": ev.CONVENTIONS, "seconds": time.time() - t0}
    ev.write_json(Path(out_dir) / set_name / "summary.json", result)
    return result
