"""The image quality prior: NR-IQA metrics, cached scoring, normalisation and a differentiable Q.

- `make_metric(name)` gives a `Metric`: "learned" (the in-pipeline network of `iqanet`) or any
  pyiqa metric name (`niqe`, `piqe`, `musiq`, `topiq_nr-face`, ...). Every metric returns *raw*
  scores; `lower_better` says the direction.
- `score_images` scores a set through a DataLoader in batches with a progress bar, reusing a
  score cache keyed by (image sha256, metric, weights hash, resolution).
- `NormStats` holds per-metric min/max over the *training* set (SPEC eq. 11):
  s_norm = (s - min) / (max - min), flipped for lower-is-better metrics, so 1 is best; the
  ensemble score S is the mean over the ensemble's metrics. The statistics are saved next to
  the scores so that a test-time S means what the training S meant.
- `DifferentiableQuality` is Q(x) in [0, 1], higher is better, with gradients, for later stages.

Weights: pyiqa caches weights under `$TORCH_HOME/hub/pyiqa`. `weights_home()` points TORCH_HOME
at `weights/torch` inside the project (unless set already) before pyiqa is imported, so a file
fetched once is reused and can be tracked. With `offline=True` a missing weight file is an
immediate error naming the file and where to put it (HF_HUB_OFFLINE=1, no download attempts).
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import atomic, iqanet

NIQE_PARAMS = "niqe_modelparameters.mat"


class MissingWeightsError(RuntimeError):
    """A metric's weights are not on disk and downloading is off."""


def weights_home(project_root: str | Path = ".") -> Path:
    """Set TORCH_HOME to `<project>/weights/torch` unless the user set it; return it."""
    home = Path(os.environ.setdefault("TORCH_HOME", str(Path(project_root).resolve() / "weights" / "torch")))
    (home / "hub" / "pyiqa").mkdir(parents=True, exist_ok=True)
    return home


def niqe_params_path() -> Path:
    """The NIQE pristine-model parameters shipped with the package (see resources/PROVENANCE.md)."""
    return Path(str(resources.files("iqpfr") / "resources" / NIQE_PARAMS))


@contextmanager
def _no_downloads():
    """Turn every download attempt by pyiqa or the HF hub into an immediate MissingWeightsError."""
    import pyiqa.utils.download_util as du

    def refuse(url, dst, *args, **kwargs):
        raise MissingWeightsError(
            f"weights file {Path(dst).name} is not in {Path(dst).parent} and downloads are off "
            f"(scoring.offline: true). Fetch {url} on a connected machine and put it at {dst}.")

    saved, old_env = du.download_url_to_file, os.environ.get("HF_HUB_OFFLINE")
    du.download_url_to_file = refuse
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        du.download_url_to_file = saved
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


@dataclass
class Metric:
    """An NR-IQA metric. `fn` maps (B, 3, H, W) in [0,1] to (B,) raw scores."""

    name: str
    lower_better: bool
    weights_hash: str
    module: torch.nn.Module
    min_size: int = 0  # images smaller than this are upsampled (bicubic) before scoring
    max_batch: int = 0  # 0 = any batch size
    differentiable: bool = True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.min_size and x.shape[-1] < self.min_size:
            x = F.interpolate(x, size=(self.min_size, self.min_size), mode="bicubic", align_corners=False).clamp(0, 1)
        out = self.module(x)
        return out.reshape(x.shape[0]).float()


class _LearnedModule(torch.nn.Module):
    def __init__(self, net: iqanet.IqaNet):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.score(x)


def _hash_state(module: torch.nn.Module, extra: str = "") -> str:
    h = hashlib.sha256(extra.encode())
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


NOT_DIFFERENTIABLE = {"piqe", "brisque", "ilniqe", "nrqm", "pi", "topiq_nr-face"}
BATCH_ONE = {"topiq_nr-face"}


def make_metric(name: str, device: str = "cpu", learned_path: str | Path = "models/prior/iqanet.pt",
                offline: bool = True, min_size: int = 0, as_loss: bool = False) -> Metric:
    """Build metric `name`: "learned" or a pyiqa name. See the module docstring for weights."""
    if name == "learned":
        net, _ = iqanet.load(learned_path, device)
        digest = hashlib.sha256(Path(learned_path).read_bytes()).hexdigest()[:16]
        return Metric("learned", False, digest, _LearnedModule(net), min_size=min_size)
    weights_home()
    import pyiqa  # imported here so TORCH_HOME is set first

    kwargs = {"pretrained_model_path": str(niqe_params_path())} if name == "niqe" else {}
    try:
        if offline:
            with _no_downloads():
                m = pyiqa.create_metric(name, device=device, as_loss=as_loss, **kwargs)
        else:
            m = pyiqa.create_metric(name, device=device, as_loss=as_loss, **kwargs)
    except MissingWeightsError:
        raise
    except Exception as err:  # noqa: BLE001 - pyiqa raises many kinds; say which metric failed
        hint = " (offline: a backbone from the HF hub or timm is missing from the cache)" if offline else ""
        raise MissingWeightsError(f"pyiqa metric {name!r} could not be built{hint}: {type(err).__name__}: {err}") from err
    size = max(min_size, 96 if name == "niqe" else 0)
    return Metric(name, bool(m.lower_better), _hash_state(m, f"pyiqa {pyiqa.__version__} {name}"), m,
                  min_size=size, max_batch=1 if name in BATCH_ONE else 0,
                  differentiable=name not in NOT_DIFFERENTIABLE)


# ----------------------------------------------------------------------------------------------
# cached scoring


class ScoreCache:
    """Append-only JSON-lines cache of raw scores keyed by sha256|metric|weights|resolution.

    Each record carries a checksum of its key and value. A record that does not parse, holds no
    finite number or fails its checksum (a line cut by a kill, a flipped byte, a hand edit) is
    dropped, so its image is scored again; `dropped` counts them."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.values: dict[str, float] = {}
        self.dropped = 0
        if self.path and self.path.exists():
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if line.strip():
                        self._read(line)

    def _read(self, line: str) -> None:
        try:
            rec = json.loads(line)
            k, v, c = rec["k"], float(rec["v"]), rec["c"]
        except (ValueError, KeyError, TypeError):
            self.dropped += 1
            return
        if isinstance(k, str) and np.isfinite(v) and c == self.checksum(k, v):
            self.values[k] = v
        else:
            self.dropped += 1

    @staticmethod
    def checksum(k: str, v: float) -> str:
        return hashlib.sha256(f"{k}={v!r}".encode()).hexdigest()[:12]

    @staticmethod
    def key(sha: str, metric: Metric, resolution: int) -> str:
        return f"{sha}|{metric.name}|{metric.weights_hash}|{resolution}"

    def add(self, items: dict[str, float]) -> None:
        """Record raw scores; each is appended as one line (a kill can cut only the last one)."""
        items = {k: float(v) for k, v in items.items()}
        self.values.update(items)
        if self.path and items:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lines = "".join(json.dumps({"k": k, "v": v, "c": self.checksum(k, v)}) + "\n" for k, v in items.items())
            with open(self.path, "a+b") as fh:
                if fh.tell() > 0:  # a line cut by a kill must not swallow the first new record
                    fh.seek(-1, os.SEEK_END)
                    if fh.read(1) != b"\n":
                        lines = "\n" + lines
                fh.write(lines.encode("utf-8"))


def score_images(dataset: torch.utils.data.Dataset, shas: list[str], metric: Metric, batch_size: int,
                 cache: ScoreCache, resolution: int, desc: str = "") -> tuple[np.ndarray, int]:
    """Raw scores (N,) of `dataset` items ((3,H,W) in [0,1], index) under `metric`.

    Only images whose key is not in `cache` are computed. Returns (scores, number computed).
    """
    keys = [cache.key(s, metric, resolution) for s in shas]
    todo = [i for i, k in enumerate(keys) if k not in cache.values]
    if todo:
        bs = metric.max_batch or batch_size
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, todo), batch_size=bs, shuffle=False)
        new: dict[str, float] = {}
        with torch.no_grad():
            for x, idx in tqdm(loader, desc=desc or f"score {metric.name}", leave=False):
                for i, v in zip(idx.tolist(), metric(x).tolist()):
                    new[keys[i]] = float(v)
        cache.add(new)
    return np.array([cache.values[k] for k in keys], dtype=np.float64), len(todo)


# ----------------------------------------------------------------------------------------------
# normalisation and the ensemble


@dataclass(frozen=True)
class NormStats:
    """Per-metric min/max over the training set and the direction; see module docstring."""

    stats: dict  # name -> {"min", "max", "lower_better", "weights_hash"}
    ensemble: list  # names averaged into S

    @classmethod
    def fit(cls, raw: dict[str, np.ndarray], metrics: dict[str, Metric], ensemble: list[str]) -> "NormStats":
        st = {}
        for name, v in raw.items():
            lo, hi = float(np.min(v)), float(np.max(v))
            if hi - lo < 1e-12:
                raise ValueError(f"metric {name!r} gives the same score to every training image; it cannot be normalised")
            st[name] = {"min": lo, "max": hi, "lower_better": metrics[name].lower_better,
                        "weights_hash": metrics[name].weights_hash}
        return cls(st, list(ensemble))

    def normalise(self, name: str, raw):
        """Map raw scores (numpy or torch) to [0,1] with 1 = best (clipped outside the training range)."""
        s = self.stats[name]
        z = (raw - s["min"]) / (s["max"] - s["min"])
        z = 1 - z if s["lower_better"] else z
        return z.clamp(0, 1) if isinstance(z, torch.Tensor) else np.clip(z, 0, 1)

    def ensemble_score(self, raw: dict[str, np.ndarray]) -> np.ndarray:
        return np.mean([self.normalise(n, raw[n]) for n in self.ensemble], axis=0)

    def save(self, path: str | Path) -> None:
        atomic.write_text(path, json.dumps({"stats": self.stats, "ensemble": self.ensemble}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "NormStats":
        d = json.loads(Path(path).read_text())
        return cls(d["stats"], d["ensemble"])


def score_bin(s: float | np.ndarray, bins: int = 10):
    """floor(bins * S) clamped to 0..bins-1 (SPEC eq. 12)."""
    return np.clip(np.floor(np.asarray(s) * bins), 0, bins - 1).astype(int)


class DifferentiableQuality(torch.nn.Module):
    """Q(x) in [0, 1], higher is better, differentiable in x: the normalised ensemble of the
    differentiable metrics named in `stats.ensemble`.

    x: (B, 3, H, W) in [0, 1] -> (B,). The min-max map is clamped to [0, 1], so the gradient is
    zero for an image already scored beyond the best training image (hinge-like, by design).
    """

    def __init__(self, metrics: Iterable[Metric], stats: NormStats):
        super().__init__()
        metrics = list(metrics)
        bad = [m.name for m in metrics if not m.differentiable]
        if bad:
            raise ValueError(f"metrics {bad} are not differentiable; a quality loss cannot use them")
        missing = set(stats.ensemble) - {m.name for m in metrics}
        if missing:
            raise ValueError(f"no metric given for ensemble members {sorted(missing)}")
        self.names = [m.name for m in metrics]
        self.metrics = torch.nn.ModuleList([m.module for m in metrics])
        self._wrappers = metrics
        self.stats = stats
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qs = [self.stats.normalise(m.name, m(x)) for m in self._wrappers]
        return torch.stack(qs, 0).mean(0)


def load_quality(norm_path: str | Path, device: str = "cpu", learned_path: str | Path = "models/prior/iqanet.pt",
                 offline: bool = True) -> DifferentiableQuality:
    """The differentiable Q of a scored data set, from the saved normalisation statistics."""
    stats = NormStats.load(norm_path)
    metrics = [make_metric(n, device, learned_path, offline, as_loss=True) for n in stats.ensemble]
    for m in metrics:
        if m.weights_hash != stats.stats[m.name]["weights_hash"]:
            raise ValueError(f"metric {m.name!r} weights differ from those the scores were normalised with; re-run scoring")
    return DifferentiableQuality(metrics, stats)
