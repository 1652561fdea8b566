"""The colour-enhancement task (notebook 06): faces whose *colour* quality varies, and a judge
of colourfulness.

In the authors' code colour enhancement is face colour restoration in CodeFormer's sense: the
Baseline+ recipe trained on the face degradations plus colour jitter and occasional grayscale.
For a quality score to steer colour, the GTs' colour quality must vary: here each training GT is
a pristine procedural face (`synthfaces`) with colour flaws of the kind old and badly processed
photographs carry, at a severity bisected so that its colour-aware true quality
(`truequality.colour` against the pristine face) follows a target distribution.

Colour flaws (our design), mixed along a random direction per image:
- a white-balance error, mostly warm (tungsten light, aged prints): R up and B down, with a
  random share of cool and green-magenta errors;
- fading: contrast pulled towards a warm grey, as in an old print;
- desaturation, and (less often) over-saturation.
The warm skew is deliberate: flaws that cancel on average (random casts) would leave the mean
GT neutral, and imitating the mean would then cost nothing; real collections are skewed the same
way (old photographs yellow, they do not turn randomly blue). `family="unseen"` (the prior's
held-out split) uses flaws the prior never trains on: a hue rotation, a channel gamma imbalance
and posterised colour.

Colourfulness is Hasler and Suesstrunk's (2003) metric M = sqrt(s_rg^2 + s_yb^2) + 0.3
sqrt(m_rg^2 + m_yb^2) on 8-bit values, rg = R - G, yb = (R + G) / 2 - B: 0 for a gray image.
`region_chroma` and `region_ciede2000` say where an image's colour is, and where it is right: the
mean CIELAB chroma and CIEDE2000 inside the centre ellipse of an aligned face crop (the face and
hair) and in the border around it (background and clothes).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from skimage.color import deltaE_ciede2000, rgb2lab

from . import data
from .degrade import to_uint8_grid
from .synthfaces import render_face
from .targetquality import at_quality, summary, synthetic_sets
from .truequality import colour_against
from .world import QualityDistribution

# split ids of the colour world's faces: apart from the face world's (world.SPLITS, 0-5)
# ("val": the design benchmarks' validation faces; "confirm": fresh faces on which no design choice
# was made, for benchmarks/colour_seeds.py --on confirm; neither is written by the pipeline)
SPLITS = {"train": 10, "holdout": 11, "iqa_train": 12, "iqa_val": 13, "iqa_unseen": 14, "test": 15, "val": 16,
          "confirm": 17}
WARM_SHARE = 0.75  # share of white-balance errors that are warm
# the centre ellipse of an aligned face crop, as fractions of its side: (x centre, y centre, x
# semi-axis, y semi-axis). It holds the face and hair of the synthetic renders (their eyes sit at
# about 0.47 of the height, the mouth at 0.69, as in FFHQ-style crops); outside it lie the
# background and the clothes (our choice; notebook 06 shows it)
CENTRE_ELLIPSE = (0.50, 0.52, 0.30, 0.38)


def colourfulness(img: np.ndarray) -> float:
    """Hasler-Suesstrunk colourfulness of an (H, W, 3) RGB image in [0,1] (8-bit scale; 0 = gray)."""
    x = np.rint(np.clip(img, 0, 1) * 255).astype(np.float64)
    rg = x[..., 0] - x[..., 1]
    yb = (x[..., 0] + x[..., 1]) / 2 - x[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def centre_mask(size: int) -> np.ndarray:
    """(size, size) bool: True inside `CENTRE_ELLIPSE` (pixel centres), False in the border."""
    cx, cy, ax, ay = CENTRE_ELLIPSE
    y, x = (np.mgrid[:size, :size] + 0.5) / size
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 < 1


def _lab(img: np.ndarray) -> np.ndarray:
    """CIELAB of a square (R, R, 3) sRGB image in [0,1], read on the 8-bit grid."""
    if img.ndim != 3 or img.shape[0] != img.shape[1] or img.shape[2] != 3:
        raise ValueError(f"the colour regions need a square (R, R, 3) image, got {img.shape}")
    return rgb2lab(np.clip(np.rint(img * 255), 0, 255) / 255.0)


def _by_region(values: np.ndarray) -> dict[str, float]:
    inside = centre_mask(values.shape[0])
    return {"centre": float(values[inside].mean()), "border": float(values[~inside].mean())}


def region_chroma(img: np.ndarray) -> dict[str, float]:
    """Mean CIELAB chroma C* = sqrt(a*^2 + b*^2) (0 = gray) of a square (R, R, 3) sRGB image in
    [0,1] in the centre ellipse and in the border: {"centre": .., "border": ..}."""
    lab = _lab(img)
    return _by_region(np.hypot(lab[..., 1], lab[..., 2]))


def region_ciede2000(img: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    """Mean CIEDE2000 difference (0 = identical) between square (R, R, 3) sRGB images in [0,1] in
    the centre ellipse and in the border: {"centre": .., "border": ..}."""
    return _by_region(deltaE_ciede2000(_lab(img), _lab(clean)))


def _saturate(img: np.ndarray, k: float) -> np.ndarray:
    g = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return g[..., None] + (img - g[..., None]) * k


@dataclass(frozen=True)
class Flaws:
    """One image's colour-flaw direction: weights of (white balance, fading, saturation) in [0, 1],
    the white-balance gains at full severity (R, G, B) and the saturation sign (-1 desaturate, +1 boost)."""

    mix: tuple[float, float, float]
    gains: tuple[float, float, float]
    saturation_sign: float

    @staticmethod
    def draw(rng: np.random.Generator) -> "Flaws":
        mix = rng.dirichlet([0.7, 0.7, 0.7])
        mix = mix / mix.max()
        u = rng.random()
        if u < WARM_SHARE:  # tungsten / aged print
            gains = (1.0 + 0.6 * rng.uniform(0.6, 1.0), 1.0 + 0.05 * rng.uniform(-1, 1), 1.0 - 0.7 * rng.uniform(0.6, 1.0))
        elif u < WARM_SHARE + 0.15:  # cool (daylight shade)
            gains = (1.0 - 0.6 * rng.uniform(0.6, 1.0), 1.0, 1.0 + 0.5 * rng.uniform(0.6, 1.0))
        else:  # green-magenta (fluorescent light)
            gains = (1.0 - 0.3 * rng.uniform(0.5, 1.0), 1.0 + 0.4 * rng.uniform(0.6, 1.0), 1.0 - 0.3 * rng.uniform(0.5, 1.0))
        sign = -1.0 if rng.random() < 0.7 else 1.0
        return Flaws(tuple(float(m) for m in mix), tuple(float(g) for g in gains), sign)


def colour_flaws(img: np.ndarray, t: float, f: Flaws, family: str = "train") -> np.ndarray:
    """The face with colour flaws of severity t in [0, 1] (0 = unchanged). (H, W, 3) in [0,1]."""
    x = img.astype(np.float32)
    if family == "unseen":
        hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0] + 120.0 * t * f.mix[0]) % 360.0
        x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        x = np.clip(x, 0, 1) ** np.array([1 + t * f.mix[1], 1.0, 1 - 0.5 * t * f.mix[1]], np.float32)
        levels = max(2, int(round(32 - 29 * t * f.mix[2])))
        return to_uint8_grid(np.round(x * (levels - 1)) / (levels - 1))
    w, fade, sat = (t * m for m in f.mix)
    x = x * (1 + w * (np.array(f.gains, np.float32) - 1))
    warm_grey = np.array([0.62, 0.55, 0.45], np.float32)
    x = x + 0.85 * fade * (warm_grey - x)
    x = _saturate(x, 1 + sat * (0.95 if f.saturation_sign < 0 else 1.5) * f.saturation_sign)
    return to_uint8_grid(np.clip(x, 0, 1))


def make_sample(seed: int, split: str, index: int, resolution: int, dist: QualityDistribution,
                family: str = "train") -> tuple[np.ndarray, np.ndarray, dict]:
    """Render face (seed, split, index) and give it colour flaws at a drawn true quality.
    Returns (gt, oracle, record); images (R, R, 3) float32 in [0,1] on the 8-bit grid."""
    sid = [seed, SPLITS[split], index]
    oracle = to_uint8_grid(render_face(sid, resolution).image)
    rng = np.random.default_rng(sid + [1])
    target = dist.sample(rng)
    f = Flaws.draw(rng)
    gt, q, t = at_quality(lambda s: colour_flaws(oracle, s, f, family), colour_against(oracle), target)
    if target >= 0.999:
        gt, q, t = oracle, 1.0, 0.0
    rec = {"split": split, "index": index, "seed": "-".join(map(str, sid)), "family": family,
           "target_quality": round(target, 4), "severity": round(t, 4), "true_quality": round(q, 5),
           "mix_white_balance": round(f.mix[0], 4), "mix_fading": round(f.mix[1], 4), "mix_saturation": round(f.mix[2], 4),
           "gain_r": round(f.gains[0], 4), "gain_g": round(f.gains[1], 4), "gain_b": round(f.gains[2], 4),
           "saturation_sign": f.saturation_sign, "colourfulness": round(colourfulness(gt), 3)}
    return gt, oracle, rec


@dataclass(frozen=True)
class _Job:
    out_dir: str
    split: str
    index: int
    seed: int
    resolution: int
    dist: QualityDistribution
    family: str


def _one(job: _Job) -> dict:
    gt, oracle, rec = make_sample(job.seed, job.split, job.index, job.resolution, job.dist, job.family)
    name = f"{job.index:06d}.png"
    out = Path(job.out_dir)
    row = {"file": f"gt/{name}", "sha256": data.write_png(out / "gt" / name, gt),
           "oracle_file": f"oracle/{name}", "oracle_sha256": data.write_png(out / "oracle" / name, oracle)}
    row.update(rec)
    return row


def write_set(out_dir: str | Path, split: str, count: int, seed: int, resolution: int, dist: QualityDistribution,
              family: str = "train", workers: int = 1) -> pd.DataFrame:
    """Render `count` colour-flawed faces into out_dir/{gt,oracle} + manifest.csv (the face world's layout)."""
    jobs = [_Job(str(out_dir), split, i, seed, resolution, dist, family) for i in range(count)]
    rows = data._parallel(_one, jobs, workers, count, f"colour {split}")
    data.write_csv(Path(out_dir) / "manifest.csv", rows)
    return pd.DataFrame(rows)


def score_bin_table(world_dir: str | Path, scores_csv: str | Path) -> pd.DataFrame:
    """What each score bin holds: per bin of the prior's S, the training GTs' count, mean true
    quality, mean colourfulness and that of their pristine faces, and the share of GTs more than 5%
    more colourful than their pristine face (over-saturated). Stage II at S learns to give the GTs of
    S's bin, so the last row is what S = 0.95 asks for."""
    world_dir = Path(world_dir)
    df = data.read_manifest(world_dir).merge(pd.read_csv(scores_csv)[["file", "S", "bin"]], on="file")
    pristine = np.array([colourfulness(data.load_png(world_dir / f)) for f in df["oracle_file"]])
    df = df.assign(pristine_colourfulness=pristine, over=df["colourfulness"] > 1.05 * pristine)
    return df.groupby("bin").agg(gts=("S", "size"), true_quality=("true_quality", "mean"),
                                 colourfulness=("colourfulness", "mean"),
                                 pristine_colourfulness=("pristine_colourfulness", "mean"),
                                 more_colourful_than_pristine=("over", "mean"))


# ----------------------------------------------------------------------------------------------
# the task's world stage


def gray(img: np.ndarray) -> np.ndarray:
    """Grayscale as three equal channels (BT.601 luma), (H, W, 3) in [0,1] on the 8-bit grid."""
    g = img @ np.array([0.299, 0.587, 0.114], np.float32)
    return to_uint8_grid(np.repeat(g[..., None], 3, axis=2))


def write_testset(dest: Path, split: str, count: int, data_cfg, gts: QualityDistribution, ranges,
                  lq_seed: int) -> pd.DataFrame:
    """Render `count` colour-flawed GTs of `split` (seeded by data_cfg.seed) and write dest/pairs
    (LQ degraded by `ranges`, a `degrade.DegradeRanges`, seeded by `lq_seed`; GTs in hq/, pristine
    faces in oracle/) and dest/gray (the same LQ in grayscale). Returns the pairs' manifest."""
    import shutil

    shutil.rmtree(dest, ignore_errors=True)
    hq = dest / "_hq_render"
    df = write_set(hq, split, count, data_cfg.seed, data_cfg.resolution, gts, "train", data_cfg.workers)
    extra = df[["true_quality"]].copy()
    extra["oracle_file"] = [f"oracle/{Path(f).name}" for f in df["oracle_file"]]
    return _pairs_and_gray(hq, dest, ranges, lq_seed, extra)


def ingest_testset(dest: Path, folder: str | Path, data_cfg, ranges, lq_seed: int,
                   expected: int = 0) -> pd.DataFrame:
    """The test set from a folder of HQ faces (e.g. CelebA-Test HQ, as the authors test colour
    enhancement): every readable image, resized to data_cfg.resolution, is a GT; dest/pairs and
    dest/gray as `write_testset` writes them, without oracles (a real photograph has no pristine
    face), so only the GT-referenced metrics apply. `expected`: the count the folder must yield
    (0 = unchecked). Unreadable files are listed in dest/rejects.csv. Returns the pairs' manifest."""
    import shutil

    files = data.list_images(folder)  # a missing folder fails here, before the old test set is removed
    shutil.rmtree(dest, ignore_errors=True)
    hq = dest / "_hq_ingest"
    dest.mkdir(parents=True)
    df, _ = data.ingest_folder(folder, hq, data_cfg.resolution, data_cfg.workers, files=files,
                               rejects_csv=dest / "rejects.csv")
    data.check_count("colour test set", df, expected)
    return _pairs_and_gray(hq, dest, ranges, lq_seed, None)


def _pairs_and_gray(hq: Path, dest: Path, ranges, lq_seed: int, extra: pd.DataFrame | None) -> pd.DataFrame:
    """dest/pairs (seeded LQ of the GTs in the set folder `hq`, with its oracle/ when `extra` names
    oracle files) and dest/gray (the pairs' LQ in grayscale, same GTs); removes `hq`."""
    import shutil

    pairs = data.build_pairs(hq, dest / "pairs", ranges, lq_seed, extra)
    subs = ["hq"]
    if extra is not None and "oracle_file" in extra:
        shutil.copytree(hq / "oracle", dest / "pairs" / "oracle")
        subs.append("oracle")
    shutil.rmtree(hq)
    grays = []  # gray: the pairs' LQ in grayscale, with the same GTs (and oracles)
    for sub in subs:
        shutil.copytree(dest / "pairs" / sub, dest / "gray" / sub)
    for rec in pairs.to_dict("records"):
        g = gray(data.load_png(dest / "pairs" / rec["file"]))
        grays.append({**rec, "sha256": data.write_png(dest / "gray" / rec["file"], g)})
    data.write_csv(dest / "gray" / "manifest.csv", grays)
    return pairs


def build_sets(data_cfg, iqa, degrade_cfg, col) -> dict:
    """Stage `colour_world`: every set of the colour task, each separately seeded.

    world/{train,holdout}: colour-flawed GTs (gt/) and their pristine faces (oracle/, never read by
    training); iqa/{train,val,unseen}: colour-flawed faces with uniform true quality for the learned
    prior (unseen: flaws it never trains on); testset/pairs: colour-degraded LQ (the task's
    `degrade` section: face degradations + colour jitter + grayscale) of fresh test GTs with their
    oracles; testset/gray: the same LQ in grayscale (colourisation). `data_cfg`, `iqa` and
    `degrade_cfg` are the task's sections (overrides applied), `col` params.yaml's `colour` section;
    the test LQ are gray with probability `col.test_gray_prob`, not the training's. With
    `col.test_hq_folder` the test GTs are that folder's faces instead (`ingest_testset`: no oracles).
    """
    import shutil
    import time

    from .pipeline import degrade_ranges, write_metrics
    from .task import COLOUR as task

    t0 = time.time()
    gts = QualityDistribution(**col.gts.__dict__)
    uniform = QualityDistribution(tail_low=col.gts.tail_low, uniform=True)
    # the test set first (each set is seeded on its own, so the order changes no pixel): a mistyped
    # test_hq_folder fails before the world is rendered. Its LQ's grayscale share is its own
    # (colour.test_gray_prob), so that a training setting (degrade.gray_prob) never moves the measurement
    test_ranges = replace(degrade_ranges(degrade_cfg), gray_prob=col.test_gray_prob)
    if col.test_hq_folder:
        pairs = ingest_testset(task.testset, col.test_hq_folder, data_cfg, test_ranges, col.test_seed,
                               col.test_expected_count)
    else:
        pairs = write_testset(task.testset, "test", col.num_test, data_cfg, gts, test_ranges, col.test_seed)
    out = {"test": {"count": len(pairs), "source": col.test_hq_folder or "synthetic",
                    "gray_in_lq": int(pairs.get("deg_gray", pd.Series(dtype=bool)).fillna(False).sum()),
                    "jittered_in_lq": int(pairs.filter(like="deg_jitter_brightness").notna().sum().sum())}}
    for folder, split, n, seed, dist, family in synthetic_sets(task, data_cfg, iqa, gts, uniform):
        shutil.rmtree(folder, ignore_errors=True)
        df = write_set(folder, split, n, seed, data_cfg.resolution, dist, family, data_cfg.workers)
        out[split] = summary(df["true_quality"].to_numpy())
    out["seconds"] = time.time() - t0
    write_metrics("world", out, task)
    return out
