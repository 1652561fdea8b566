"""Data on disk: robust image reading, folder ingestion, manifests, the synthetic world writer,
the test-set builder and a torch Dataset over a manifest.

Conventions: images in memory are float32 RGB (H, W, 3) in [0, 1]; on disk they are 8-bit PNG.
Every written set has `manifest.csv` (one row per image: file relative to the set folder,
sha256 of the written file, and what produced it). Inputs that cannot be used are never dropped
silently: they go to `rejects.csv` with the reason.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from . import atomic
from .atomic import sha256_file  # noqa: F401 - part of this module's API (data.sha256_file)
from .degrade import DegradeRanges, degrade

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


class ImageRejected(ValueError):
    """An input file that cannot be turned into an RGB image; the message is the reason."""


def display_name(path: str | Path) -> str:
    """A file name as text that any table can hold: bytes that are not valid UTF-8 become
    backslash escapes (`bad_\\udcff.png`)."""
    return str(path).encode("utf-8", "backslashreplace").decode("utf-8")



def read_image(path: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read any common image file as float32 RGB (H, W, 3) in [0, 1].

    Converts grayscale, gray+alpha, RGBA (composited over white), palette and 16-bit images and
    returns the list of conversions made. Raises ImageRejected for unreadable, truncated,
    empty or non-image files.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.verify()  # structure check; catches many corrupt files
        with Image.open(path) as im:
            im.load()  # full decode; raises on truncated data
    except Image.DecompressionBombError as err:
        raise ImageRejected(f"too large to decode safely ({err})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageRejected(f"not a readable image ({type(err).__name__}: {err})") from None
    # decoded from bytes: OpenCV's file functions crash on paths that are not valid UTF-8
    data = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
    notes: list[str] = []
    with Image.open(path) as im:
        frames = getattr(im, "n_frames", 1)
        orientation = im.getexif().get(EXIF_ORIENTATION, 1)
    if frames > 1:
        notes.append(f"animated: first of {frames} frames")
    if data is None:  # formats PIL reads but OpenCV does not (e.g. some palettes): go via PIL
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA", "L", "LA"):
                notes.append(f"mode {im.mode}->RGB")
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            data = np.asarray(im)
            data = data[..., ::-1] if data.ndim == 3 and data.shape[2] == 3 else data
            if data.ndim == 3 and data.shape[2] == 4:
                data = data[..., [2, 1, 0, 3]]
    if data.size == 0:
        raise ImageRejected("empty image")
    if data.dtype == np.uint16:
        img, notes = data.astype(np.float32) / 65535.0, notes + ["16-bit->8-bit"]
    elif data.dtype == np.uint8:
        img = data.astype(np.float32) / 255.0
    elif data.dtype in (np.float32, np.float64):
        img, notes = np.clip(data.astype(np.float32), 0, 1), notes + ["float->8-bit"]
    else:
        raise ImageRejected(f"unsupported sample type {data.dtype}")
    if img.ndim == 2:
        img, notes = np.repeat(img[..., None], 3, 2), notes + ["grayscale->RGB"]
    elif img.shape[2] == 2:  # gray + alpha
        img = np.concatenate([np.repeat(img[..., :1], 3, 2), img[..., 1:]], 2)
        notes.append("grayscale->RGB")
    if img.shape[2] == 4:
        a = img[..., 3:]
        img, notes = img[..., :3] * a + (1 - a), notes + ["alpha composited over white"]
    if orientation in ORIENT:  # show the picture the way a viewer does
        img, notes = ORIENT[orientation](img), notes + [f"EXIF orientation {orientation} applied"]
    return np.ascontiguousarray(img[..., ::-1]), notes  # OpenCV's BGR -> RGB


EXIF_ORIENTATION = 0x0112
ORIENT = {  # EXIF orientation -> the transform that displays the stored pixels upright
    2: lambda x: x[:, ::-1], 3: lambda x: x[::-1, ::-1], 4: lambda x: x[::-1],
    5: lambda x: x.transpose(1, 0, 2), 6: lambda x: np.rot90(x, -1), 7: lambda x: x.transpose(1, 0, 2)[::-1, ::-1],
    8: lambda x: np.rot90(x, 1),
}


def to_square(img: np.ndarray, size: int) -> tuple[np.ndarray, list[str]]:
    """Centre-crop to a square (if needed) and resize to (size, size, 3)."""
    h, w = img.shape[:2]
    notes = []
    if h != w:
        s = min(h, w)
        y0, x0 = (h - s) // 2, (w - s) // 2
        img = img[y0:y0 + s, x0:x0 + s]
        notes.append(f"non-square {w}x{h}: centre-cropped")
    if img.shape[0] != size:
        interp = cv2.INTER_AREA if img.shape[0] > size else cv2.INTER_CUBIC
        img = np.clip(cv2.resize(img, (size, size), interpolation=interp), 0, 1)
        notes.append(f"resized {min(h, w)}->{size}")
    return img, notes


def write_png(path: str | Path, img: np.ndarray) -> str:
    """Write (H, W, 3) float [0,1] RGB as 8-bit PNG atomically; return the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", u8[..., ::-1])
    if not ok:
        raise RuntimeError(f"PNG encoding failed for {path}")
    return atomic.write_bytes(path, buf.tobytes())


def load_png(path: str | Path) -> np.ndarray:
    """Read an 8-bit RGB PNG written by this package: (H, W, 3) float32 in [0,1]."""
    path = Path(path)
    u8 = cv2.imdecode(np.frombuffer(path.read_bytes(), np.uint8), cv2.IMREAD_COLOR) if path.is_file() else None
    if u8 is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return u8[..., ::-1].astype(np.float32) / 255.0


def list_images(folder: str | Path) -> list[Path]:
    """Every file under `folder` (recursively) except hidden ones, sorted. Non-images, broken and
    looping symbolic links are kept so that ingestion can report them instead of skipping them
    silently."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist")
    return sorted(p for p in folder.rglob("*") if (p.is_file() or p.is_symlink()) and not p.name.startswith("."))


def write_csv(path: str | Path, rows: list[dict], columns: list[str] | None = None) -> None:
    """Write dict rows as UTF-8 CSV atomically (columns = union of keys, in first-seen order). Source
    file names that are not valid UTF-8 are written with backslash escapes (e.g. `bad_\\udcff.png`)."""
    cols: list[str] = list(columns or [])
    for r in rows:
        cols += [k for k in r if k not in cols]
    text = io.StringIO(newline="")
    w = csv.DictWriter(text, fieldnames=cols)
    w.writeheader()
    w.writerows(rows)
    atomic.write_bytes(path, text.getvalue().encode("utf-8", errors="backslashreplace"))


def read_manifest(set_dir: str | Path) -> pd.DataFrame:
    """The manifest of a set folder, with a check that the listed files exist."""
    set_dir = Path(set_dir)
    path = set_dir / "manifest.csv"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: build the set first (dvc repro)")
    df = pd.read_csv(path, keep_default_na=False)
    missing = [f for f in df["file"] if not (set_dir / f).exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} files listed in {path} are missing, e.g. {missing[0]}")
    return df


_SHARED: dict = {}  # inside a `shared_pool` block: {"pools": {workers: Pool}}


@contextlib.contextmanager
def shared_pool():
    """Inside this block every `_parallel` call reuses one spawn pool per worker count.

    A spawn worker imports the package (torch included) before its first job: measured 3-5 s for
    a pool of 2 on 2 cores. A stage that renders several sets (the colour world renders six) pays
    that once instead of once per set. The pool starts on first use and is stopped when the block
    ends; results do not depend on it (each job seeds itself from its own ids)."""
    if "pools" in _SHARED:  # nested: the outer block owns the pools
        yield
        return
    _SHARED["pools"] = {}
    try:
        yield
    finally:
        for pool in _SHARED.pop("pools").values():
            pool.terminate()
            pool.join()


def _parallel(fn: Callable, items: Iterable, workers: int, total: int, desc: str) -> list:
    """[fn(x) for x in items] in order, on `workers` spawn processes when workers > 1."""
    items = list(items)
    if workers <= 1:
        return [fn(x) for x in tqdm(items, total=total, desc=desc)]
    pools = _SHARED.get("pools")
    if pools is None:
        with get_context("spawn").Pool(workers) as pool:
            return list(tqdm(pool.imap(fn, items, chunksize=8), total=total, desc=desc))
    if workers not in pools:
        pools[workers] = get_context("spawn").Pool(workers)
    return list(tqdm(pools[workers].imap(fn, items, chunksize=8), total=total, desc=desc))


# ----------------------------------------------------------------------------------------------
# Folder ingestion


@dataclass(frozen=True)
class _IngestJob:
    src: str
    out_dir: str
    name: str
    size: int


def _ingest_one(job: _IngestJob) -> dict:
    try:
        img, notes = read_image(job.src)
        if min(img.shape[:2]) < 8:
            raise ImageRejected(f"too small ({img.shape[1]}x{img.shape[0]})")
        img, more = to_square(img, job.size)
        digest = write_png(Path(job.out_dir) / job.name, img)
        return {"file": job.name, "sha256": digest, "source": display_name(job.src),
                "source_sha256": sha256_file(job.src), "conversions": "; ".join(notes + more)}
    except ImageRejected as err:
        return {"rejected": display_name(job.src), "reason": display_name(err)}


def ingest_folder(src: str | Path, out_dir: str | Path, size: int, workers: int = 1,
                  subdir: str = "gt", files: list[Path] | None = None,
                  rejects_csv: str | Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Convert every usable image under `src` (or the given `files`) to a (size x size) RGB PNG
    in `out_dir/subdir`.

    Writes `out_dir/manifest.csv` and the rejected files with their reasons (columns file, reason)
    to `rejects_csv` (default `out_dir/rejects.csv`; elsewhere when out_dir is temporary), and
    returns both. Raises if no image at all could be used.
    """
    out_dir = Path(out_dir)
    rejects_csv = Path(rejects_csv) if rejects_csv is not None else out_dir / "rejects.csv"
    files = list_images(src) if files is None else files
    jobs = [_IngestJob(str(p), str(out_dir), f"{subdir}/{i:06d}.png", size) for i, p in enumerate(files)]
    results = _parallel(_ingest_one, jobs, workers, len(jobs), f"ingest {src}")
    rows = [r for r in results if "file" in r]
    rejects = [{"file": r["rejected"], "reason": r["reason"]} for r in results if "rejected" in r]
    write_csv(rejects_csv, rejects, columns=["file", "reason"])
    if not rows:
        raise ImageRejected(f"no usable image in {src} ({len(rejects)} rejected; see {rejects_csv})")
    write_csv(out_dir / "manifest.csv", rows)
    if rejects:
        warnings.warn(f"{len(rejects)} of {len(files)} files in {src} rejected; see {rejects_csv}")
    return pd.DataFrame(rows), pd.DataFrame(rejects, columns=["file", "reason"])


# ----------------------------------------------------------------------------------------------
# Test sets


def build_pairs(hq_dir: str | Path, out_dir: str | Path, ranges: DegradeRanges, seed: int,
                extra_columns: pd.DataFrame | None = None) -> pd.DataFrame:
    """Seeded LQ/HQ pairs (CelebA-Test style) from a set folder with a manifest.

    LQ i is `degrade(HQ i, default_rng([seed, i]))`: the same seed always gives the same set.
    Writes out_dir/{hq,lq}/NNNNNN.png and a manifest with the degradation parameters per image.
    """
    hq_dir, out_dir = Path(hq_dir), Path(out_dir)
    src = read_manifest(hq_dir)
    rows = []
    for i, rec in enumerate(tqdm(src.to_dict("records"), desc="test pairs")):
        hq = load_png(hq_dir / rec["file"])
        lq, params = degrade(hq, np.random.default_rng([seed, i]), ranges)
        name = f"{i:06d}.png"
        row = {"file": f"lq/{name}", "sha256": write_png(out_dir / "lq" / name, lq),
               "hq_file": f"hq/{name}", "hq_sha256": write_png(out_dir / "hq" / name, hq),
               "source": rec.get("source", str(hq_dir / rec["file"])), "seed": f"{seed}-{i}"}
        row.update({f"deg_{k}": v for k, v in params.items()})
        if extra_columns is not None:
            row.update(extra_columns.iloc[i].to_dict())
        rows.append(row)
    write_csv(out_dir / "manifest.csv", rows)
    atomic.write_text(out_dir / "degradation.json", json.dumps(
        {"seed": seed, "ranges_at_512px": ranges.__dict__, "resolution": int(hq.shape[0]),
         "count": len(rows)}, indent=2, default=list))
    return pd.DataFrame(rows)


def check_count(name: str, df: pd.DataFrame, expected: int) -> None:
    """Raise if a test set does not hold the expected number of images (0 = unchecked)."""
    if expected and len(df) != expected:
        raise ValueError(f"test set {name!r} holds {len(df)} images; expected {expected}")


# ----------------------------------------------------------------------------------------------
# torch


class ManifestDataset(torch.utils.data.Dataset):
    """Images listed in a set folder's manifest, as (3, H, W) float32 tensors in [0, 1].

    `column` picks which file column to read ("file", or "hq_file" in a pair set).
    Items are (image, row index).
    """

    def __init__(self, set_dir: str | Path, column: str = "file", rows: pd.DataFrame | None = None):
        self.set_dir = Path(set_dir)
        self.frame = read_manifest(self.set_dir) if rows is None else rows.reset_index(drop=True)
        self.files = list(self.frame[column])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = load_png(self.set_dir / self.files[i])
        return torch.from_numpy(img).permute(2, 0, 1).contiguous(), i


# ----------------------------------------------------------------------------------------------
# The synthetic world on disk


@dataclass(frozen=True)
class _WorldJob:
    out_dir: str
    split: str
    index: int
    seed: int
    resolution: int
    dist: object
    ranges: object
    family: str
    restorer_fraction: float = 0.0


def _world_one(job: _WorldJob) -> dict:
    from .world import make_sample

    gt, oracle, rec = make_sample(job.seed, job.split, job.index, job.resolution, job.dist, job.ranges, job.family,
                                job.restorer_fraction)
    name = f"{job.index:06d}.png"
    row = {"file": f"gt/{name}", "sha256": write_png(Path(job.out_dir) / "gt" / name, gt),
           "oracle_file": f"oracle/{name}", "oracle_sha256": write_png(Path(job.out_dir) / "oracle" / name, oracle)}
    row.update(rec)
    return row


def write_synthetic_set(out_dir: str | Path, split: str, count: int, seed: int, resolution: int,
                        dist, ranges, family: str = "train", workers: int = 1,
                        restorer_fraction: float = 0.0) -> pd.DataFrame:
    """Render `count` faces of `split` with their capture into out_dir/{gt,oracle} + manifest.csv.

    With `restorer_fraction` > 0 (family "train" only) that fraction of the images, drawn per
    image, carries restorer-like artefacts (capture family "restorer") instead.

    `dist` is a world.QualityDistribution and `ranges` a degrade.CaptureRanges. The oracle folder
    holds the pristine renders: training code must only read `gt/`.
    """
    jobs = [_WorldJob(str(out_dir), split, i, seed, resolution, dist, ranges, family, restorer_fraction)
            for i in range(count)]
    rows = _parallel(_world_one, jobs, workers, count, f"render {split}")
    write_csv(Path(out_dir) / "manifest.csv", rows)
    return pd.DataFrame(rows)
