"""Evaluation: metrics with their conventions stated (SPEC 4), and the comparison of the main
model, its variants and the inference ablations on every test set (SPEC 1.7).

Conventions (also written into every summary JSON, see CONVENTIONS):
- PSNR: RGB, all three channels, no border crop, on images rounded to the 8-bit grid, data range
  1 (255 for 8-bit). Identical images give +inf; `psnr` caps it at 100 dB so tables stay numeric.
- SSIM: BT.601 luma, Gaussian window sigma 1.5, population covariances (Wang et al. 2004), no
  crop; the measure that defines true quality in the synthetic world.
- LPIPS: v0.1 linear heads on the `evaluation.lpips_net` backbone, inputs mapped to [-1, 1]; lower
  is better. It needs torchvision's ImageNet backbone weights: without them it is reported as
  unavailable, never computed with a random backbone.
- FID: torchmetrics' FrechetInceptionDistance with the standard pt_inception-2015-12-05 weights
  (2048-d pool features, images resized to 299 by the network). The reference statistics are the
  set's own GT images, so the sample count is the set size: these values are comparable only to
  FIDs computed against the same reference set with the same count, not to papers' FFHQ statistics.
- Identity: Euclidean distance between dlib's 128-d face descriptors (dlib_face_recognition_resnet_
  model_v1 from `face-recognition-models`, 5-point alignment, the whole aligned image as the face
  box); dlib's same-person threshold is 0.6. Not applicable below `identity_min_size` px.
- No-reference: the prior's normalised score S (the quality the model was trained and
  conditioned on) and held-out judges (pyiqa metrics never used for training or conditioning),
  raw values with their direction stated.
- On synthetic test pairs the pristine render (the *oracle*, never seen in training) is a second
  reference: `*_oracle` columns measure how close an output is to the ideal face, which is how
  "restoration exceeds the GT's quality" can be measured (the GT's own SSIM to its oracle is its
  true quality).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from . import atomic, data, quality
from .world import true_quality

PSNR_CAP = 100.0
EVAL = Path("reports/eval")  # per-image CSVs and per set/variant summary JSONs
INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"
LPIPS_BACKBONES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

CONVENTIONS = {
    "psnr": "RGB, no crop, 8-bit grid, data range 1, capped at 100 dB; higher is better",
    "ssim": "BT.601 luma, Gaussian sigma 1.5, no crop; higher is better",
    "lpips": "v0.1 linear heads, inputs in [-1, 1]; lower is better",
    "fid": "torchmetrics FID, standard Inception pool3 (2048-d), reference = the set's GT images, count = set size",
    "identity": "Euclidean distance of dlib 128-d descriptors (same person < 0.6); lower is better",
    "S": "the prior's normalised ensemble score in [0, 1] (training statistics); higher is better",
    "oracle": "*_oracle columns compare with the pristine render (synthetic sets only)",
}


def to_grid(img: np.ndarray) -> np.ndarray:
    """Round (H, W, 3) float in [0,1] to the 8-bit grid."""
    return np.clip(np.rint(img * 255), 0, 255) / 255.0


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB between (H, W, 3) images in [0,1] (RGB, no crop, 8-bit grid), capped at 100."""
    mse = float(np.mean((to_grid(a) - to_grid(b)) ** 2))
    return PSNR_CAP if mse == 0 else min(PSNR_CAP, 10 * np.log10(1.0 / mse))


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM on luma between (H, W, 3) images in [0,1] (8-bit grid), clipped to [0,1]."""
    return true_quality(to_grid(a).astype(np.float32), to_grid(b).astype(np.float32))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise quality.MissingWeightsError(f"{what} needs {path.name} in {path.parent} (not downloadable here)")
    return path


class Lpips:
    """LPIPS(x, y) for (B, 3, H, W) in [0,1] -> (B,); lower is better."""

    def __init__(self, net: str = "alex", device: str = "cpu"):
        import lpips

        _require(quality.weights_home() / "hub" / "checkpoints" / LPIPS_BACKBONES[net], f"LPIPS({net})")
        self.net = lpips.LPIPS(net=net, verbose=False).to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y, normalize=True).flatten()


def frechet_distance(real: torch.Tensor, fake: torch.Tensor, feature: torch.nn.Module | None = None,
                     batch: int = 64) -> float:
    """Fréchet distance between the feature distributions of two image sets (N, 3, H, W) in [0,1].
    `feature=None` is the standard FID (Inception weights required); any module mapping
    (B, 3, H, W) in [0,1] to (B, F) can stand in (tests use that)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    if feature is None:
        path = _require(quality.weights_home() / "hub" / "checkpoints" / INCEPTION_FILE, "FID")
        fid = FrechetInceptionDistance(feature=2048, normalize=True, feature_extractor_weights_path=str(path))
    else:
        fid = FrechetInceptionDistance(feature=feature, normalize=True, input_img_size=tuple(real.shape[1:]))
    for i in range(0, len(real), batch):
        fid.update(real[i:i + batch], real=True)
    for i in range(0, len(fake), batch):
        fid.update(fake[i:i + batch], real=False)
    return float(fid.compute())


class Identity:
    """Identity distance with dlib's face-embedding ResNet on aligned faces (H, W, 3) in [0,1]."""

    def __init__(self):
        import dlib

        from .restore import face_models

        frm = face_models()
        self.dlib = dlib
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def descriptor(self, img: np.ndarray) -> np.ndarray:
        """128-d descriptor of an aligned face: the whole image is the face box."""
        u8 = np.ascontiguousarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
        h, w = u8.shape[:2]
        shape = self.shape(u8, self.dlib.rectangle(0, 0, w - 1, h - 1))
        return np.array(self.net.compute_face_descriptor(u8, shape))

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(self.descriptor(a) - self.descriptor(b)))


# ----------------------------------------------------------------------------------------------
# per-image tables


@dataclass
class Judges:
    """The no-reference metrics of an evaluation: the prior (S) and the held-out judges."""

    stats: quality.NormStats
    prior: dict  # name -> Metric (the ensemble members behind S)
    judges: dict  # name -> Metric (held out)
    unavailable: dict  # judge name -> reason

    @classmethod
    def load(cls, norm_stats: Path, prior_path: Path, judge_names: list[str], judge_size: int,
             offline: bool, device: str = "cpu") -> "Judges":
        stats = quality.NormStats.load(norm_stats)
        prior = {n: quality.make_metric(n, device, prior_path, offline) for n in stats.ensemble}
        judges, unavailable = {}, {}
        for n in judge_names:
            if n in stats.ensemble:
                raise ValueError(f"evaluation.judges: {n!r} is part of the prior; a judge must be held out")
            try:
                judges[n] = quality.make_metric(n, device, prior_path, offline, min_size=judge_size)
            except quality.MissingWeightsError as err:
                unavailable[n] = str(err)
        return cls(stats, prior, judges, unavailable)

    @staticmethod
    def _run(metric, x: torch.Tensor, batch: int) -> np.ndarray:
        step = metric.max_batch or batch
        return torch.cat([metric(x[i:i + step]) for i in range(0, len(x), step)]).numpy()

    @torch.no_grad()
    def prior_score(self, x: torch.Tensor, batch: int = 64) -> np.ndarray:
        """The prior's normalised score S (N,) of images (N, 3, R, R) in [0,1]."""
        return self.stats.ensemble_score({n: self._run(m, x, batch) for n, m in self.prior.items()})

    @torch.no_grad()
    def score(self, x: torch.Tensor, batch: int = 64) -> pd.DataFrame:
        """Columns S (prior, normalised) and one raw column per available judge, for (N, 3, R, R) in [0,1]."""
        out = {"S": self.prior_score(x, batch)}
        out.update({n: self._run(m, x, batch) for n, m in self.judges.items()})
        return pd.DataFrame(out)

    def directions(self) -> dict[str, str]:
        """'higher' or 'lower' (is better) for S and every judge."""
        return {"S": "higher", **{n: "lower" if m.lower_better else "higher" for n, m in self.judges.items()}}


def full_reference(out: torch.Tensor, ref: torch.Tensor, suffix: str, lpips_fn=None,
                   identity: Identity | None = None) -> pd.DataFrame:
    """Per-image PSNR, SSIM (and LPIPS, identity when given) of outputs vs references, both
    (N, 3, R, R) in [0,1]; columns psnr_<suffix>, ssim_<suffix>, ..."""
    a, b = out.permute(0, 2, 3, 1).numpy(), ref.permute(0, 2, 3, 1).numpy()
    cols = {f"psnr_{suffix}": [psnr(x, y) for x, y in zip(a, b)], f"ssim_{suffix}": [ssim(x, y) for x, y in zip(a, b)]}
    if lpips_fn is not None:
        cols[f"lpips_{suffix}"] = torch.cat([lpips_fn(out[i:i + 32], ref[i:i + 32]) for i in range(0, len(out), 32)]).numpy()
    if identity is not None:
        cols[f"identity_{suffix}"] = [identity.distance(x, y) for x, y in zip(a, b)]
    return pd.DataFrame(cols)


def paired_difference(a: np.ndarray, b: np.ndarray, seed: int = 0, n_boot: int = 2000) -> dict:
    """Mean of a - b over paired images with a seeded bootstrap 95% interval."""
    d = np.asarray(a, float) - np.asarray(b, float)
    rng = np.random.default_rng(seed)
    boots = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(1)
    return {"mean": float(d.mean()), "low": float(np.quantile(boots, 0.025)), "high": float(np.quantile(boots, 0.975))}


def verdict(diff: dict, better: str = "higher") -> str:
    """'supported' when the 95% interval of (claimed better - other) lies on the better side of 0,
    'contradicted' when on the other side, else 'inconclusive'."""
    lo, hi = (diff["low"], diff["high"]) if better == "higher" else (-diff["high"], -diff["low"])
    return "supported" if lo > 0 else "contradicted" if hi < 0 else "inconclusive"


def summarise(table: pd.DataFrame) -> dict:
    """Mean of every numeric column of a per-image table, plus the count."""
    num = table.select_dtypes("number")
    return {"n": int(len(table)), **{c: float(num[c].mean()) for c in num.columns}}


# ----------------------------------------------------------------------------------------------
# models under test


@dataclass(frozen=True)
class Entry:
    """One row of the comparison: a checkpoint and how it is run at test time."""

    name: str
    checkpoint: Path | None  # None: a reference row (the LQ input or the GT itself)
    description: str
    hq_weight: float | None = None
    continuous: bool = False
    guidance: float = 1.0  # the model's transformer.guidance (classifier-free guidance of the score)


def entries(variants: dict, hq_weights: list[float], stage2: Path, variants_dir: Path,
            guidance: dict[str, float] | None = None) -> list[Entry]:
    """The rows of the comparison, in table order. `guidance`: per trained model ("iqpfr" or a
    variant's name) its transformer.guidance (config.guidance_by_row); 1.0 where absent."""
    g = guidance or {}
    rows = [Entry("lq", None, "the degraded input")]
    described = {"baseline": "single codebook, no score conditioning",
                 "baseline_plus": "baseline + score embedding only (plug-and-play)",
                 "no_quality_loss": "IQPFR without the quality loss",
                 "continuous": "quality loss on G(z_l); output through the codebooks"}
    for name in variants:
        rows.append(Entry(name, variants_dir / name / "restorer.pt", described.get(name, f"variant {name}"),
                          guidance=g.get(name, 1.0)))
    rows.append(Entry("iqpfr", stage2, "the main model: dual codebook + conditioning + quality loss", guidance=g.get("iqpfr", 1.0)))
    rows += [Entry(f"iqpfr_lambda{lam:g}", stage2, f"the main model decoded with lambda = {lam:g}", hq_weight=lam,
                   guidance=g.get("iqpfr", 1.0)) for lam in hq_weights]
    if "continuous" in variants:
        rows.append(Entry("continuous_latent", variants_dir / "continuous" / "restorer.pt",
                          "continuous variant decoded from z_l without quantisation (what it optimised)",
                          continuous=True, guidance=g.get("continuous", 1.0)))
    return rows


@torch.no_grad()
def restore_all(model, lq: torch.Tensor, entry: Entry, score: float, batch: int = 64) -> torch.Tensor:
    """Outputs of `model` for LQ (N, 3, R, R) in [0,1] as run by `entry`, (N, 3, R, R) in [0,1]."""
    return torch.cat([model.restore(lq[i:i + batch], score, entry.hq_weight, continuous=entry.continuous)
                      for i in range(0, len(lq), batch)])


def load_set(set_dir: Path) -> dict:
    """A test set: LQ stack, and the GT and oracle stacks where the manifest has them."""
    df = data.read_manifest(set_dir)

    def stack(col):
        return torch.from_numpy(np.stack([data.load_png(set_dir / f) for f in df[col]])).permute(0, 3, 1, 2).contiguous()

    out = {"files": df["file"].tolist(), "lq": stack("file")}
    for col, key in (("hq_file", "gt"), ("oracle_file", "oracle")):
        if col in df.columns:
            out[key] = stack(col)
    return out


def evaluate_set(name: str, images: dict, rows: dict[str, torch.Tensor], judges: Judges, lpips_fn=None,
                 identity: Identity | None = None, fid: bool = False, out_dir: Path = EVAL,
                 progress=print) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """Per-image tables and summaries of every row's outputs on one set; writes
    <out_dir>/<set>/<row>.csv and .json. `rows` maps row name -> outputs (N, 3, R, R)."""
    (out_dir / name).mkdir(parents=True, exist_ok=True)
    summaries, tables = {}, {}
    for row, out in rows.items():
        t0 = time.time()
        table = pd.concat([pd.DataFrame({"file": images["files"]}), judges.score(out)], axis=1)
        if "gt" in images and row != "gt":
            table = pd.concat([table, full_reference(out, images["gt"], "gt", lpips_fn, identity)], axis=1)
        if "oracle" in images:
            table = pd.concat([table, full_reference(out, images["oracle"], "oracle")], axis=1)
        summary = summarise(table)
        if fid and "gt" in images and row != "gt":
            summary["fid_gt"] = frechet_distance(images["gt"], out)
        table.to_csv(out_dir / name / f"{row}.csv", index=False, float_format="%.6g")
        write_json(out_dir / name / f"{row}.json", {"set": name, "row": row, "means": summary,
                                                        "directions": judges.directions(), "conventions": CONVENTIONS})
        summaries[row], tables[row] = summary, table
        progress(f"{name}/{row}: {len(out)} images in {time.time() - t0:.1f} s")
    return summaries, tables


def write_json(path: Path, values: dict) -> None:
    """Sorted keys, plain floats (NaN written as null so that DVC and browsers can read it)."""
    import json

    def clean(v):
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, float | np.floating):
            return None if not np.isfinite(v) else float(v)
        return v

    atomic.write_text(path, json.dumps(clean(values), indent=2, sort_keys=True) + "\n")
