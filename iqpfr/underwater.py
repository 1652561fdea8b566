"""The synthetic underwater world: clean scenes with depth, the physical image-formation model,
and enhancement *references* of uneven quality (the UIEB situation).

Scene (our design). A camera looks forward and down over a sandy seabed: the open-water column
above the horizon (distance 12-20 m), the seabed receding from 1-2 m at the bottom edge to 8-15 m
at the horizon, rocks, coral branches in saturated colours, fish with stripes and sometimes a
diver, each at its own distance. J is the scene as it would look in air under white light: RGB in
[0, 1]; d its distance to the camera in metres.

Formation (the simplified model of Jaffe-McGlamery as used by e.g. Akkaynak & Treibitz 2018):
    I_c = J_c t_c + B_c (1 - t_c),   t_c = exp(-beta_c d),
then forward scatter (a Gaussian blur mixed in with a weight that grows with the mean distance),
low light (an exposure factor) and sensor noise (signal-dependent Gaussian). beta is the wideband
attenuation per channel and B the veiling light, both per Jerlov water type.

Jerlov coefficients. `JERLOV` holds, per type, the downwelling diffuse attenuation K_d (1/m)
at about 620 / 540 / 460 nm (used for beta of R / G / B), rounded from Jerlov's tabulated spectra
(N. G. Jerlov, Marine Optics, 1976; re-derived in Solonenko & Mobley, Appl. Opt. 54:5392, 2015).
They were transcribed approximately, not checked against the table in this repository: they set
the *kind* of cast (oceanic: red lost first; turbid coastal: blue lost first, yellow-green water),
which is what the world needs. The veiling-light colours B are our choice, matching the hue of
each water type.

References. UIEB's references are the outputs of 12 enhancement methods picked by people, so they
carry residual casts, haze and over-enhancement. Here a reference is the clean scene with such
artefacts added along a random mixture direction (residual of the raw image, over-enhancement:
contrast and saturation boosted, a wrong cast, amplified noise); a bisection on the severity makes
the reference's colour-aware true quality (`truequality.colour` against J) match a drawn target,
so the reference quality follows a chosen distribution and every score bin is populated.

Every sample is a pure function of (seed, split, index).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from . import data
from .degrade import jpeg, to_uint8_grid
from .targetquality import at_quality, summary, synthetic_sets
from .truequality import colour as true_quality, colour_against
from .world import QualityDistribution

SPLITS = {"train": 0, "holdout": 1, "iqa_train": 2, "iqa_val": 3, "iqa_unseen": 4, "test": 5}

# type: (beta_R, beta_G, beta_B) in 1/m
JERLOV = {
    "I": (0.30, 0.05, 0.02),
    "III": (0.37, 0.13, 0.12),
    "1C": (0.35, 0.12, 0.18),
    "3C": (0.40, 0.19, 0.32),
    "5C": (0.50, 0.29, 0.52),
    "7C": (0.62, 0.42, 0.85),
}
# veiling light B (our choice: the hue of each water type)
VEILING = {
    "I": (0.04, 0.30, 0.55),
    "III": (0.05, 0.33, 0.48),
    "1C": (0.07, 0.38, 0.42),
    "3C": (0.10, 0.41, 0.34),
    "5C": (0.14, 0.42, 0.26),
    "7C": (0.18, 0.40, 0.20),
}
OCEANIC = ("I", "III")


@dataclass(frozen=True)
class Water:
    """One water and camera condition."""

    kind: str  # Jerlov type
    range_scale: float  # multiplies the scene distances (how far the subject is)
    light: float  # exposure factor (1 = daylight at the surface)
    scatter: float  # forward-scatter weight at 10 m
    noise: float  # sensor noise sigma at full signal (x/1)


def formation(clean: np.ndarray, depth: np.ndarray, water: Water, rng: np.random.Generator) -> np.ndarray:
    """The raw underwater image of a clean scene. clean (H, W, 3) in [0,1], depth (H, W) in metres
    -> (H, W, 3) in [0,1] on the 8-bit grid."""
    beta = np.array(JERLOV[water.kind], np.float32)
    b = np.array(VEILING[water.kind], np.float32)
    depth = depth * water.range_scale
    t = np.exp(-beta[None, None, :] * depth[..., None])
    img = clean * t + b * (1 - t)
    w = np.clip(water.scatter * float(depth.mean()) / 10.0, 0, 0.8)
    sigma = max(0.6, img.shape[0] / 64)
    img = (1 - w) * img + w * cv2.GaussianBlur(img, (0, 0), sigma)
    img = img * water.light
    img = img + rng.standard_normal(img.shape).astype(np.float32) * water.noise * np.sqrt(np.clip(img, 0.02, 1))
    return to_uint8_grid(np.clip(img, 0, 1))


def draw_water(rng: np.random.Generator, kinds: tuple[str, ...]) -> Water:
    return Water(str(rng.choice(list(kinds))), float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.5, 1.0)), float(rng.uniform(0.1, 0.6)),
                 float(rng.uniform(0.0, 0.04)))


# ----------------------------------------------------------------------------------------------
# scenes


def _smooth_noise(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth noise in about [-1, 1] with features of `scale` pixels."""
    n = rng.standard_normal((size, size)).astype(np.float32)
    n = cv2.GaussianBlur(n, (0, 0), max(scale, 0.5))
    return n / (n.std() + 1e-6)


def _ellipse_mask(size, cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c, s = np.cos(angle), np.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return ((u / rx) ** 2 + (v / ry) ** 2) <= 1.0


def _paint(img, depth, mask, colour, dist, texture=None, amount=0.0):
    col = np.asarray(colour, np.float32)[None, :] * np.ones((int(mask.sum()), 1), np.float32)
    if texture is not None:
        col = col * (1 + amount * texture[mask][:, None])
    img[mask] = np.clip(col, 0, 1)
    depth[mask] = dist


def render_scene(seed: list[int], resolution: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Render a clean scene at 2x and average down. Returns (J (R, R, 3) in [0,1] on the 8-bit
    grid, d (R, R) metres, attributes)."""
    rng = np.random.default_rng(seed)
    S = 2 * resolution
    yy = (np.mgrid[0:S, 0:S][0].astype(np.float32) + 0.5) / S
    horizon = rng.uniform(0.15, 0.5)
    far_bed, near_bed, water_dist = rng.uniform(8, 15), rng.uniform(1.0, 2.0), rng.uniform(12, 20)
    img = np.empty((S, S, 3), np.float32)
    depth = np.empty((S, S), np.float32)
    sky = np.array([0.62, 0.78, 0.88], np.float32) * rng.uniform(0.85, 1.1)
    img[:] = sky * (1.0 - 0.25 * yy[..., None])
    depth[:] = water_dist
    bed = yy >= horizon
    frac = np.clip((yy - horizon) / (1 - horizon), 0, 1)
    bed_depth = far_bed + (near_bed - far_bed) * np.sqrt(frac)
    sand = np.array([0.78, 0.71, 0.52], np.float32) * rng.uniform(0.8, 1.1)
    tex = _smooth_noise(rng, S, S / 24) + 0.5 * _smooth_noise(rng, S, 1.0)
    _paint(img, depth, bed, sand, bed_depth[bed], tex, 0.12)
    attrs = {"horizon": round(horizon, 3), "rocks": 0, "corals": 0, "fish": 0, "diver": 0}
    for _ in range(rng.integers(1, 5)):  # rocks
        cy = rng.uniform(horizon + 0.1, 1.0) * S
        cx, r = rng.uniform(0, S), rng.uniform(0.06, 0.2) * S * (cy / S)
        m = _ellipse_mask(S, cx, cy, r * rng.uniform(1.0, 1.8), r, rng.uniform(-0.3, 0.3))
        d = float(bed_depth[min(int(cy), S - 1), 0]) - 0.2
        grey = rng.uniform(0.3, 0.55)
        _paint(img, depth, m, (grey * rng.uniform(0.9, 1.15), grey, grey * rng.uniform(0.8, 1.0)), d,
               _smooth_noise(rng, S, 2.0), 0.25)
        attrs["rocks"] += 1
    palette = [(0.92, 0.25, 0.22), (0.95, 0.55, 0.15), (0.75, 0.25, 0.70), (0.95, 0.85, 0.25), (0.95, 0.45, 0.55)]
    for _ in range(rng.integers(1, 6)):  # coral: branches as thick segments from a base
        bx, by = rng.uniform(0, S), rng.uniform(horizon + 0.15, 1.0) * S
        colr = palette[rng.integers(len(palette))]
        d = float(bed_depth[min(int(by), S - 1), 0]) - 0.1
        layer = np.zeros((S, S), np.uint8)
        h = rng.uniform(0.1, 0.3) * S * (by / S)
        for _ in range(rng.integers(3, 7)):
            ang = rng.uniform(-1.0, 1.0)
            tx, ty = bx + h * np.sin(ang), by - h * np.cos(ang)
            cv2.line(layer, (int(bx), int(by)), (int(tx), int(ty)), 1, max(1, int(S / 40 * by / S) + 1))
            cv2.circle(layer, (int(tx), int(ty)), max(1, int(S / 30)), 1, -1)
        _paint(img, depth, layer > 0, colr, d, _smooth_noise(rng, S, 1.0), 0.15)
        attrs["corals"] += 1
    for _ in range(rng.integers(0, 7)):  # fish: body ellipse, tail triangle, stripes
        cx, cy = rng.uniform(0, S), rng.uniform(0.05, 0.9) * S
        L = rng.uniform(0.04, 0.12) * S
        d = rng.uniform(1.5, 7.0)
        body = _ellipse_mask(S, cx, cy, L, L * 0.45)
        direction = rng.choice([-1, 1])
        tail = np.zeros((S, S), np.uint8)
        tx = cx - direction * L
        pts = np.array([[tx, cy], [tx - direction * L * 0.7, cy - L * 0.45], [tx - direction * L * 0.7, cy + L * 0.45]])
        cv2.fillPoly(tail, [pts.astype(np.int32)], 1)
        colr = palette[rng.integers(len(palette))] if rng.random() < 0.7 else (0.2, 0.45, 0.85)
        xs = np.mgrid[0:S, 0:S][1].astype(np.float32)
        stripes = np.sin((xs - cx) / max(L / 3, 1.0) * np.pi)
        _paint(img, depth, body | (tail > 0), colr, d, stripes, 0.25 * rng.random())
        attrs["fish"] += 1
    if rng.random() < 0.3:  # diver: dark suit, head, yellow tank
        cx, cy, L = rng.uniform(0.2, 0.8) * S, rng.uniform(0.2, 0.6) * S, rng.uniform(0.12, 0.25) * S
        d = rng.uniform(2.0, 6.0)
        ang = rng.uniform(-0.6, 0.6)
        _paint(img, depth, _ellipse_mask(S, cx, cy, L, L * 0.22, ang), (0.08, 0.08, 0.1), d)
        _paint(img, depth, _ellipse_mask(S, cx, cy - L * 0.3, L * 0.55, L * 0.12, ang), (0.95, 0.8, 0.1), d - 0.1)
        hx, hy = cx + L * np.cos(ang), cy + L * np.sin(ang)
        _paint(img, depth, _ellipse_mask(S, hx, hy, L * 0.16, L * 0.16), (0.85, 0.65, 0.55), d)
        attrs["diver"] = 1
    clean = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
    dist = cv2.resize(depth, (resolution, resolution), interpolation=cv2.INTER_AREA)
    return to_uint8_grid(np.clip(clean, 0, 1)), dist.astype(np.float32), attrs


# ----------------------------------------------------------------------------------------------
# references of uneven quality


def _saturate(img: np.ndarray, k: float) -> np.ndarray:
    g = img.mean(2, keepdims=True)
    return g + (img - g) * k


def artefacts(clean: np.ndarray, raw: np.ndarray, t: float, mix: np.ndarray, cast: np.ndarray,
              field: np.ndarray, family: str = "train") -> np.ndarray:
    """An enhancement output of severity t in [0, 1] (0 = the clean scene).

    family "train": mixture of residual raw (haze and cast left in), over-enhancement (contrast
    and saturation pushed), a wrong cast, and amplified noise, weighted by `mix` (4,).
    family "unseen" (the prior's held-out degradations): under-exposure (gamma), desaturation and
    JPEG blocking."""
    if family == "unseen":
        x = np.clip(clean, 0, 1) ** (1 + 2.5 * t * mix[0])
        x = _saturate(x, 1 - 0.9 * t * mix[1])
        x = np.clip(x, 0, 1)
        return jpeg(x, int(round(95 - 90 * t * mix[2]))) if t * mix[2] > 0.02 else to_uint8_grid(x)
    x = clean + 0.9 * t * mix[0] * (raw - clean)
    k = 1 + 1.5 * t * mix[1]
    x = _saturate((x - 0.5) * k + 0.5, k)
    x = x * (1 + 0.6 * t * mix[2] * cast)
    x = x + 0.15 * t * mix[3] * field
    return to_uint8_grid(np.clip(x, 0, 1))


def reference_at_quality(clean: np.ndarray, raw: np.ndarray, target: float, rng: np.random.Generator,
                         family: str = "train", steps: int = 9) -> tuple[np.ndarray, dict]:
    """Bisection on the severity so that the reference's true quality is closest to `target`."""
    mix = rng.dirichlet([0.6] * 4)
    mix = mix / mix.max()
    cast = rng.standard_normal(3).astype(np.float32)
    cast /= np.abs(cast).max()
    field = rng.standard_normal(clean.shape).astype(np.float32)
    img, q, t = at_quality(lambda s: artefacts(clean, raw, s, mix, cast, field, family),
                           colour_against(clean), target, steps)
    return img, {"target_quality": round(target, 4), "severity": round(t, 4), "true_quality": round(q, 5),
                 "family": family, **{f"mix_{k}": round(float(v), 4)
                                       for k, v in zip(("residual", "overenhance", "cast", "noise"), mix)}}


def make_sample(seed: int, split: str, index: int, resolution: int, dist: QualityDistribution,
                kinds: tuple[str, ...], family: str = "train") -> tuple[dict[str, np.ndarray], dict]:
    """One underwater sample: {"clean": J, "raw": I, "reference": the enhancement reference}
    (each (R, R, 3) float32 in [0,1]) and its record (water, scene and reference parameters)."""
    sid = [seed, SPLITS[split], index]
    clean, depth, attrs = render_scene(sid, resolution)
    rng = np.random.default_rng(sid + [1])
    water = draw_water(rng, kinds)
    raw = formation(clean, depth, water, rng)
    ref, rec = reference_at_quality(clean, raw, dist.sample(rng), rng, family)
    record = {"split": split, "index": index, "seed": "-".join(map(str, sid)), "water": water.kind, "range_scale": round(water.range_scale, 4),
              "light": round(water.light, 4), "scatter": round(water.scatter, 4), "noise": round(water.noise, 4),
              "mean_depth": round(float(depth.mean()), 3), "raw_true_quality": round(true_quality(raw, clean), 5),
              **attrs, **rec}
    return {"clean": clean, "raw": raw, "reference": ref}, record


@dataclass(frozen=True)
class _Job:
    out_dir: str
    split: str
    index: int
    seed: int
    resolution: int
    dist: QualityDistribution
    kinds: tuple[str, ...]
    family: str


def _one(job: _Job) -> dict:
    imgs, rec = make_sample(job.seed, job.split, job.index, job.resolution, job.dist, job.kinds, job.family)
    name = f"{job.index:06d}.png"
    out = Path(job.out_dir)
    # same columns as the face world (file = GT, oracle_file = the clean image) plus raw_file (the LQ input)
    row = {"file": f"gt/{name}", "sha256": data.write_png(out / "gt" / name, imgs["reference"]),
           "oracle_file": f"oracle/{name}", "oracle_sha256": data.write_png(out / "oracle" / name, imgs["clean"]),
           "raw_file": f"raw/{name}", "raw_sha256": data.write_png(out / "raw" / name, imgs["raw"])}
    row.update(rec)
    return row


def write_set(out_dir: str | Path, split: str, count: int, seed: int, resolution: int, dist: QualityDistribution,
              kinds: tuple[str, ...], family: str = "train", workers: int = 1) -> pd.DataFrame:
    """Render `count` samples into out_dir/{gt,oracle,raw} + manifest.csv (gt = the references)."""
    jobs = [_Job(str(out_dir), split, i, seed, resolution, dist, tuple(kinds), family) for i in range(count)]
    rows = data._parallel(_one, jobs, workers, count, f"underwater {split}")
    data.write_csv(Path(out_dir) / "manifest.csv", rows)
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------------
# the task's world stage


# UIEB (Li et al., IEEE TIP 2020): raw images, their references, and the reference-free challenging set
UIEB_FOLDERS = {"raw": "raw-890", "reference": "reference-890", "challenging": "challenging-60"}
UIEB_COUNTS = {"raw": 890, "reference": 890, "challenging": 60}
UIEB_TEST = 90  # the usual seeded 800 / 90 split


def _ingest(src: Path, out: Path, size: int) -> str:
    img, _ = data.read_image(src)
    img, _ = data.to_square(img, size)
    return data.write_png(out, img)


def build_uieb(data_cfg, uw) -> dict:
    """The UIEB folder source (paper profile): `data.folder` holds raw-890/, reference-890/ (same
    file names) and challenging-60/. Counts are checked; a seeded split (`underwater.test_seed`)
    keeps 90 pairs for testing and 800 for training, of which the last `data.num_holdout` are held
    out. Images are centre-cropped to squares of `data.resolution`. UIEB has no clean scene: the
    sets carry no oracle column, so only reference-based and no-reference measures apply. The
    learned prior ranks the training references (folder mode of `train_prior`)."""
    import shutil

    from .task import UNDERWATER as task

    root = Path(data_cfg.folder)
    found = {k: sorted(p for p in (root / v).glob("*") if p.suffix.lower() in data.IMAGE_SUFFIXES)
             for k, v in UIEB_FOLDERS.items()}
    for k, files in found.items():
        if len(files) != UIEB_COUNTS[k]:
            raise ValueError(f"{root / UIEB_FOLDERS[k]} holds {len(files)} images; UIEB's has {UIEB_COUNTS[k]}")
    refs = {p.name: p for p in found["reference"]}
    missing = [p.name for p in found["raw"] if p.name not in refs]
    if missing:
        raise ValueError(f"{len(missing)} raw images have no reference of the same name, e.g. {missing[:3]}")
    order = np.random.default_rng(uw.test_seed).permutation(len(found["raw"]))
    test = [found["raw"][i] for i in order[:UIEB_TEST]]
    train = [found["raw"][i] for i in order[UIEB_TEST:]]
    splits = {task.world / "train": train[:-data_cfg.num_holdout], task.world / "holdout": train[-data_cfg.num_holdout:],
              task.testset / "pairs": test}
    for sub in ("world", "iqa", "testset"):
        shutil.rmtree(task.data / sub, ignore_errors=True)
    out = {}
    for folder, raws in splits.items():
        rows = []
        for i, raw in enumerate(raws):
            name = f"{i:06d}.png"
            ref_sha = _ingest(refs[raw.name], folder / "gt" / name, data_cfg.resolution)
            raw_sha = _ingest(raw, folder / "raw" / name, data_cfg.resolution)
            if folder == task.testset / "pairs":  # LQ = the raw image, HQ = its reference
                rows.append({"file": f"raw/{name}", "sha256": raw_sha, "hq_file": f"gt/{name}", "hq_sha256": ref_sha,
                             "source": raw.name})
            else:
                rows.append({"file": f"gt/{name}", "sha256": ref_sha, "raw_file": f"raw/{name}", "raw_sha256": raw_sha,
                             "source": raw.name})
        data.write_csv(folder / "manifest.csv", rows)
        out[str(folder.relative_to(task.data))] = {"count": len(rows)}
    for split, folder in (("rank_train", "train"), ("rank_holdout", "holdout")):  # the prior ranks references
        shutil.copytree(task.world / folder, task.iqa / split)
    rows = [{"file": f"lq/{i:06d}.png", "sha256": _ingest(p, task.testset / "challenging" / "lq" / f"{i:06d}.png",
                                                           data_cfg.resolution), "source": p.name}
            for i, p in enumerate(found["challenging"])]
    data.write_csv(task.testset / "challenging" / "manifest.csv", rows)
    out["testset/challenging"] = {"count": len(rows)}
    return out


def build_sets(data_cfg, iqa, uw) -> dict:
    """Stage `underwater_world`: every set of the underwater task, each separately seeded
    (`data.source: folder` reads UIEB instead: `build_uieb`).

    world/{train,holdout}: references (gt/), raw inputs (raw/) and clean scenes (oracle/, never
    read by training); iqa/{train,val,unseen}: references with uniform true quality for the learned
    prior (unseen: artefacts it never trains on); testset/pairs: raw LQ (file), reference
    (hq_file), clean scene (oracle_file). `data_cfg` and `iqa` are the task's sections (overrides
    applied), `uw` params.yaml's `underwater` section.
    """
    import shutil
    import time

    from .pipeline import write_metrics
    from .task import UNDERWATER as task

    t0 = time.time()
    if data_cfg.source == "folder":
        out = build_uieb(data_cfg, uw)
        out["seconds"] = time.time() - t0
        write_metrics("world", out, task)
        return out
    kinds = tuple(uw.water_types)
    refs = QualityDistribution(**uw.references.__dict__)
    uniform = QualityDistribution(tail_low=uw.references.tail_low, uniform=True)
    sets = synthetic_sets(task, data_cfg, iqa, refs, uniform)
    sets.append((task.testset / "pairs", "test", uw.num_test, uw.test_seed, refs, "train"))
    out = {}
    for folder, split, n, seed, dist, family in sets:
        shutil.rmtree(folder, ignore_errors=True)
        df = write_set(folder, split, n, seed, data_cfg.resolution, dist, kinds, family, data_cfg.workers)
        out[split] = {**summary(df["true_quality"].to_numpy()),
                      "raw_true_quality_mean": float(df["raw_true_quality"].mean()),
                      "water_types": df["water"].value_counts().to_dict()}
    pairs = pd.read_csv(task.testset / "pairs" / "manifest.csv")  # LQ = raw, HQ = reference, oracle = clean
    pairs = pairs.rename(columns={"file": "hq_file", "sha256": "hq_sha256"}).rename(
        columns={"raw_file": "file", "raw_sha256": "sha256"})
    pairs.to_csv(task.testset / "pairs" / "manifest.csv", index=False)
    out["seconds"] = time.time() - t0
    write_metrics("world", out, task)
    return out
