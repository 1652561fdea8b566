"""Scoring a folder of any size with NR-IQA metrics: streamed, batched, cached, resumable, sharded.

    iqpfr score FOLDER -o scores.csv --metrics learned niqe
    torchrun --nproc_per_node 4 -m iqpfr.cli score FOLDER -o scores.csv --metrics learned niqe

How it works:
- The files are listed (sorted); process r of w (torchrun's RANK and WORLD_SIZE) takes files
  r, r + w, r + 2w, ...
- A DataLoader's workers read each file, hash its bytes (sha256) and, unless every metric already
  has that image in the cache, decode it (`data.read_image`: every format the project reads) and
  resize it to `size` x `size`. Memory stays bounded by `batch_size` x (workers x prefetch + 1)
  images, whatever the folder's size.
- The main process of each rank scores whole batches on its device and appends the raw scores to
  its own cache shard (`<cache>.rank<r>.jsonl`, checksummed records: see `quality.ScoreCache`) after
  every batch. A killed run loses at most one batch per process; a rerun, with any number of
  processes, reads every shard and scores only what is missing.
- After a barrier, rank 0 gathers which file had which hash or why it was rejected, and writes the
  table (file, sha256, one raw column per metric, and S when normalisation statistics are given)
  and the rejected files with their reasons.

Scores are keyed by content, metric, metric weights and size, as in the pipeline's scoring stage.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist

from . import data, quality
from .train import setup_distributed


@dataclass
class ScoreResult:
    table: list[dict] = field(default_factory=list)  # file, sha256, one column per metric (+ S)
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    computed: int = 0  # images scored by this run (all ranks), the rest came from the cache
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every file was scored, 1 when some were rejected (the rest are in the table)."""
        return 1 if self.rejected else 0


class _Files(torch.utils.data.Dataset):
    """Item i: (i, sha256 or "", (3, size, size) float32 in [0,1] or None, rejection reason or "").
    The image is decoded only when its sha256 is not in `done`."""

    def __init__(self, files: list[Path], size: int, done: frozenset[str]):
        self.files, self.size, self.done = files, size, done

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        path = self.files[i]
        try:
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            return i, "", None, f"unreadable ({err.strerror or err})"
        if sha in self.done:
            return i, sha, None, ""
        try:
            img, _ = data.read_image(path)
        except data.ImageRejected as err:
            return i, sha, None, str(err)
        shrink = img.shape[0] > self.size or img.shape[1] > self.size
        img = cv2.resize(img, (self.size, self.size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
        return i, sha, torch.from_numpy(np.ascontiguousarray(img.clip(0, 1))).permute(2, 0, 1), ""


def _as_list(batch):
    return batch


def cache_shards(cache: Path) -> list[Path]:
    """The cache file and every rank's shard of it."""
    return [p for p in [cache, *sorted(cache.parent.glob(cache.name + ".rank*.jsonl"))] if p.exists()]


def load_cache(cache: Path) -> quality.ScoreCache:
    """Every shard of `cache` merged in memory (records that fail their checksum are dropped)."""
    merged = quality.ScoreCache(None)
    for shard in cache_shards(cache):
        part = quality.ScoreCache(shard)
        merged.values.update(part.values)
        merged.dropped += part.dropped
    return merged


def _score_batch(items: list, metrics: dict[str, quality.Metric], size: int, known: dict[str, float],
                 shard: quality.ScoreCache, device: torch.device) -> int:
    """Score the decoded images of one batch with every metric that lacks them; append to `shard`."""
    ready = [(sha, x) for _, sha, x, _ in items if x is not None]
    if not ready:
        return 0
    x = torch.stack([t for _, t in ready]).to(device)
    new: dict[str, float] = {}
    with torch.no_grad():
        for m in metrics.values():
            keys = [quality.ScoreCache.key(sha, m, size) for sha, _ in ready]
            todo = [j for j, k in enumerate(keys) if k not in known]
            step = m.max_batch or len(todo) or 1
            for a in range(0, len(todo), step):
                idx = todo[a:a + step]
                for j, v in zip(idx, m(x[idx]).tolist()):
                    new[keys[j]] = float(v)
    shard.add(new)
    known.update(new)
    return len(ready)


def score_folder(folder: str | Path, out_csv: str | Path, metric_names: list[str], size: int,
                 prior: str | Path = "models/prior/iqanet.pt", norm_stats: str | Path | None = None,
                 cache: str | Path | None = None, batch_size: int = 32, workers: int = 2, offline: bool = True,
                 progress=print) -> ScoreResult:
    """Score every image under `folder` (see the module docstring); torchrun-aware. Writes `out_csv`
    and, when some files are rejected, `<out_csv stem>.rejected.csv` (rank 0)."""
    t0 = time.time()
    stats = quality.NormStats.load(norm_stats) if norm_stats else None
    if stats is not None and not set(stats.ensemble) <= set(metric_names):
        raise ValueError(f"S needs the ensemble's metrics {stats.ensemble}; score with them (--metrics)")
    d = setup_distributed()
    out_csv = Path(out_csv)
    cache = Path(cache) if cache else out_csv.with_name(out_csv.name + ".cache.jsonl")
    files = data.list_images(folder)
    mine = list(range(d.rank, len(files), d.world))
    metrics = {n: quality.make_metric(n, str(d.device), prior, offline) for n in metric_names}
    for n in stats.ensemble if stats is not None else []:
        if stats.stats[n]["weights_hash"] != metrics[n].weights_hash:
            raise ValueError(f"{norm_stats} was fitted to other {n!r} weights: S would be meaningless")
    known = load_cache(cache).values
    done = frozenset(sha for sha in _cached_shas(known, metrics, size))
    shard = quality.ScoreCache(cache.with_name(f"{cache.name}.rank{d.rank}.jsonl"))
    loader = torch.utils.data.DataLoader(_Files([files[i] for i in mine], size, done), batch_size=batch_size,
                                         num_workers=workers, collate_fn=_as_list,
                                         persistent_workers=False, prefetch_factor=2 if workers else None)
    seen: list[tuple[int, str, str]] = []  # (file index, sha256, reason)
    computed, last = 0, time.time()
    for batch in loader:
        computed += _score_batch(batch, metrics, size, known, shard, d.device)
        seen += [(mine[i], sha, reason) for i, sha, _, reason in batch]
        if time.time() - last > 10 and progress is not None:
            progress(f"rank {d.rank}: {len(seen)}/{len(mine)} files, {computed} scored, "
                     f"{len(seen) - computed} from the cache or rejected")
            last = time.time()
    if d.world > 1:
        parts: list = [None] * d.world
        dist.all_gather_object(parts, (seen, computed))
        seen = [s for part, _ in parts for s in part]
        computed = sum(c for _, c in parts)
    result = ScoreResult(computed=computed)
    if d.main:
        _write(result, files, seen, load_cache(cache).values, metrics, size, stats, out_csv, Path(folder))
    if d.world > 1:
        dist.barrier()
    result.seconds = time.time() - t0
    return result


def _cached_shas(known: dict[str, float], metrics: dict[str, quality.Metric], size: int) -> set[str]:
    """The image hashes that every metric has already scored at `size`."""
    per_metric = []
    for m in metrics.values():
        suffix = f"|{m.name}|{m.weights_hash}|{size}"
        per_metric.append({k[: -len(suffix)] for k in known if k.endswith(suffix)})
    return set.intersection(*per_metric) if per_metric else set()


def _write(result: ScoreResult, files: list[Path], seen: list[tuple[int, str, str]], values: dict[str, float],
           metrics: dict[str, quality.Metric], size: int, stats: quality.NormStats | None, out_csv: Path,
           folder: Path) -> None:
    for i, sha, reason in sorted(seen):
        name = data.display_name(files[i].relative_to(folder))
        if reason:
            result.rejected.append((name, reason))
            continue
        row = {"file": name, "sha256": sha}
        row.update({n: values[quality.ScoreCache.key(sha, m, size)] for n, m in metrics.items()})
        result.table.append(row)
    if stats is not None and result.table:
        raw = {n: np.array([r[n] for r in result.table]) for n in stats.ensemble}
        for r, s in zip(result.table, stats.ensemble_score(raw)):
            r["S"] = float(s)
    data.write_csv(out_csv, result.table, ["file", "sha256", *metrics] + (["S"] if stats else []))
    rejected = out_csv.with_name(out_csv.stem + ".rejected.csv")
    if result.rejected:
        data.write_csv(rejected, [{"file": f, "reason": r} for f, r in result.rejected])
    elif rejected.exists():
        rejected.unlink()
