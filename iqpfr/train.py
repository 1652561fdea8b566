"""Training machinery: deterministic data order, EMA, atomic checkpoints with exact resume,
torchrun DDP, CSV logs; and the stage-I loop of the dual-codebook VQGAN (SPEC 1.2).

Determinism and resume. The batch of step t is a pure function of (seed, t): an epoch-wise
permutation seeded by (seed, epoch) gives the sample order and a generator seeded by (seed, t)
gives the flips, so a resumed run sees exactly the batches an uninterrupted run would. A
checkpoint holds the model, EMA, optimisers, schedulers, step and RNG states.

Distributed. Under `torchrun` (RANK/WORLD_SIZE set) every process takes its share of the global
batch (rank r gets positions r, r + W, ...), gradients are averaged by DDP, so W processes with
batch B/W each compute what one process computes with batch B (up to BatchNorm: the
discriminator's BatchNorm sees only the local batch; on CUDA it becomes SyncBatchNorm). Rank 0
alone logs and writes checkpoints.

Precision: `precision.resolve` picks bf16 autocast where the device has native bf16 (CUDA, or a
CPU with AVX512-bf16 / AMX-bf16), fp32 elsewhere; the choice is stored in the checkpoint and a
resume with another precision is refused. Vector quantisation and the losses run in fp32 either
way. Images and convolution weights are channels_last (faster on CUDA and on this CPU).
"""
from __future__ import annotations

import csv
import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import atomic, losses, precision, safeload
from .quantize import code_usage
from .vqgan import DualCodebookVQGAN, PatchDiscriminator, VQGANConfig

STAGE1_FORMAT = "iqpfr.stage1/3"  # /2: CodeFormer-aligned downsampling padding and attention layout; /3: no activation before conv_out
CODE_FILES = ("vqgan.py", "quantize.py", "losses.py", "train.py")


def code_hash() -> str:
    """sha256 of the model and training source: a checkpoint is only resumed or reused by the code
    that wrote it (a changed loss must retrain, not silently reuse an old model)."""
    h = hashlib.sha256()
    for name in CODE_FILES:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------
# distributed helpers


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Dist:
    """Initialise torch.distributed when launched by torchrun (gloo on CPU, NCCL on CUDA)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if torch.cuda.is_available():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Dist(rank, world, device)


# ----------------------------------------------------------------------------------------------
# data order


def batch_indices(step: int, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> list[int]:
    """Dataset indices of this process's share of the global batch of `step` (a pure function)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
    glob = perm[pos * batch_size:(pos + 1) * batch_size].tolist()
    return glob[rank::world]


def batch_flips(step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Horizontal-flip decisions (bool) for this process's share of step `step`'s batch."""
    g = torch.Generator().manual_seed(seed * 7_919 + step + 1)
    return (torch.rand(batch_size, generator=g) < 0.5)[rank::world]


# ----------------------------------------------------------------------------------------------
# checkpoints


def save_atomic(obj: dict, path: str | Path) -> str:
    """torch.save to a temporary file, fsync, then rename (`atomic`): a kill or a failing disk never
    leaves a half-written checkpoint, and the previous one stays in place.
    Returns the sha256 of the file."""
    return atomic.save_torch(obj, path)


def rng_state() -> dict:
    """The global RNG states as tensors and plain numbers (readable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
            "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    random.setstate(state["python"])


def load_checkpoint(path: str | Path, fmt: str) -> dict:
    """Read a checkpoint as data (`safeload`: nothing in it can run) and check its format tag;
    clear errors for missing, damaged or foreign files."""
    path = Path(path)
    ckpt = safeload.load(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{path} is not an {fmt} checkpoint (found {found!r})")
    return ckpt


def load_stage1_model(path: str | Path, expect: VQGANConfig | None = None, ema: bool = True) -> tuple[DualCodebookVQGAN, dict]:
    """The trained stage-I model of a checkpoint (EMA generator by default), frozen, in eval mode.

    Raises ValueError if the checkpoint's config differs from `expect` or it was never trained.
    """
    ckpt = load_checkpoint(path, STAGE1_FORMAT)
    cfg = VQGANConfig(**ckpt["config"])
    if expect is not None and cfg != expect:
        diff = {k: (v, getattr(expect, k)) for k, v in asdict(cfg).items() if v != getattr(expect, k)}
        raise ValueError(f"{path} was trained with a different config (checkpoint, expected): {diff}")
    if ckpt["step"] <= 0 and not ckpt.get("imported"):  # imported weights were trained elsewhere
        raise ValueError(f"{path} holds an untrained model (step 0): train stage I first")
    model = DualCodebookVQGAN(cfg)
    model.load_state_dict(ckpt["model"], strict=True)
    if ema:
        avg = {k.removeprefix("module."): v for k, v in ckpt["ema_generator"].items() if k != "n_averaged"}
        model.generator.load_state_dict(avg, strict=True)
    model.eval().requires_grad_(False)
    return model, {"step": ckpt["step"], "train_config": ckpt["train_config"]}


# ----------------------------------------------------------------------------------------------
# the loop shared by both stages


class TrainingLoop:
    """What both stages' trainers share: `train()` over `train_step()`, logging and checkpoints.

    A subclass provides `s` (settings with steps, log_every, checkpoint_every), `d` (Dist), `step`,
    `log`, `train_step() -> dict`, `save(path)` and `resume(path)` (ValueError if incompatible).
    """

    def train(self, until: int | None = None, checkpoint: str | Path | None = None, progress=None) -> list[dict]:
        """Run steps up to `until` (default: all), logging every `log_every` and checkpointing every
        `checkpoint_every` steps and at the end. Returns the log."""
        until = self.s.steps if until is None else min(until, self.s.steps)
        while self.step < until:
            row = self.train_step()
            if self.step % self.s.log_every == 0 or self.step == until:
                self.log.append(row)
                if progress is not None and self.d.main:
                    progress(row)
            if checkpoint and (self.step % self.s.checkpoint_every == 0 or self.step == until):
                self.save(checkpoint)
        return self.log


def fingerprint(*parts) -> str:
    """sha256 (16 hex) of what a run trains on: tensors by their bytes, everything else by repr.
    Stored in checkpoints, so that a finished run is never reused for other data."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, torch.Tensor):
            h.update(part.detach().cpu().contiguous().numpy().tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()[:16]


def resume_or_restart(make_trainer, path: Path, progress=print):
    """A trainer resumed from `path` when that checkpoint is compatible (same config, settings and
    code), else a fresh one, with the incompatible checkpoint set aside as *.stale.pt (never mixed in)."""
    trainer = make_trainer()
    if not path.exists():
        return trainer
    try:
        trainer.resume(path)
        progress(f"resumed {path} at step {trainer.step}/{trainer.s.steps}")
        return trainer
    except ValueError as err:
        stale = path.with_suffix(".stale.pt")
        if trainer.d.main:
            path.rename(stale)
        progress(f"not resuming ({err}); the old checkpoint is kept as {stale}")
        return make_trainer()


# ----------------------------------------------------------------------------------------------
# stage I


@dataclass(frozen=True)
class Stage1Settings:
    """What the stage-I loop needs (built from params.yaml's `stage1` section)."""

    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    lr_min_ratio: float = 0.1
    codebook_lr_mult: float = 1.0
    codebook_init: str = "encoder"  # "encoder": codes drawn from the first batch's encoder outputs; "uniform": +-1/K
    init_from: str = ""  # a stage-I checkpoint whose weights step 0 starts from (then no codebook_init)
    restart_every: int = 0  # dead-code restart period in steps (0 = never)
    precision: str = "fp32"  # resolved: "fp32" or "bf16" (autocast)
    ema_decay: float = 0.995
    perceptual_weight: float = 1.0
    gan_start: int = 30_000
    gan_weight: float = 0.8
    hflip: bool = True
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000


class Stage1Trainer(TrainingLoop):
    """Trains the dual-codebook VQGAN on images (N, 3, R, R) in [0,1] with per-image gates (N,).

    `perceptual` is a module (x, y in [0,1]) -> scalar loss, or None.
    """

    def __init__(self, cfg: VQGANConfig, settings: Stage1Settings, images: torch.utils.data.Dataset,
                 gates: torch.Tensor, perceptual: nn.Module | None = None, dist_info: Dist | None = None,
                 inputs: str = ""):
        self.cfg, self.s, self.images, self.gates = cfg, settings, images, gates.float()
        self.inputs = inputs  # fingerprint of the data (see `fingerprint`): checked on resume
        self.perceptual = perceptual
        self.d = dist_info or Dist()
        torch.manual_seed(settings.seed)
        fmt = torch.channels_last  # faster on CUDA and on the CPU (fwd+bwd 0.81 -> 0.63 s, default stage I)
        self.model = DualCodebookVQGAN(cfg).to(self.d.device, memory_format=fmt)
        self.disc = PatchDiscriminator(cfg.disc_nf, cfg.disc_layers).to(self.d.device, memory_format=fmt)
        if self.d.world > 1 and self.d.device.type == "cuda":
            self.disc = nn.SyncBatchNorm.convert_sync_batchnorm(self.disc)
        self.ema = AveragedModel(self.model.generator, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
        books = [self.model.quant_c.embedding.weight, self.model.quant_h.embedding.weight]
        rest = [p for p in self.model.parameters() if all(p is not b for b in books)]
        self.opt_g = torch.optim.Adam([{"params": rest}, {"params": books, "lr": settings.lr * settings.codebook_lr_mult}],
                                      lr=settings.lr, betas=settings.betas)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=settings.lr, betas=settings.betas)
        eta = settings.lr * settings.lr_min_ratio
        self.sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt_g, settings.steps, eta)
        self.step = 0
        self.log: list[dict] = []
        self.usage = torch.zeros(2, cfg.codebook_size, dtype=torch.long)  # (C, H) choices since the last restart
        if self.d.world > 1:
            self.model_ddp = DDP(self.model, find_unused_parameters=cfg.fusion == "attention")
            self.disc_ddp = DDP(self.disc)
        else:
            self.model_ddp, self.disc_ddp = self.model, self.disc

    # -- checkpointing --------------------------------------------------------------------------
    def state(self) -> dict:
        return {"format": STAGE1_FORMAT, "config": asdict(self.cfg), "train_config": asdict(self.s), "code": code_hash(),
                "step": self.step, "model": self.model.state_dict(), "ema_generator": self.ema.state_dict(),
                "discriminator": self.disc.state_dict(), "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(), "sched_g": self.sched_g.state_dict(),
                "usage": self.usage.clone(), "rng": rng_state(), "log": self.log, "inputs": self.inputs}

    def save(self, path: str | Path) -> str | None:
        return save_atomic(self.state(), path) if self.d.main else None

    def resume(self, path: str | Path) -> None:
        """Restore everything from a checkpoint written by `save`; strict about the config."""
        ckpt = load_checkpoint(path, STAGE1_FORMAT)
        if VQGANConfig(**ckpt["config"]) != self.cfg:
            raise ValueError(f"{path}: model config differs from the params; delete it or restore the params")
        if ckpt.get("code") != code_hash():
            raise ValueError(f"{path} was written by other model/training code ({ckpt.get('code')} != {code_hash()})")
        saved = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["train_config"].items()}
        if saved.get("precision", self.s.precision) != self.s.precision:
            raise ValueError(f"{path} was trained in {saved.get('precision')}, this run would train in "
                             f"{self.s.precision}: a resume must keep its precision")
        if saved != asdict(self.s):
            changed = sorted(k for k in saved.keys() | asdict(self.s).keys() if saved.get(k) != asdict(self.s).get(k))
            raise ValueError(f"{path} was trained with other settings ({', '.join(changed)}): resuming would not be exact")
        if ckpt.get("inputs", "") != self.inputs:
            raise ValueError(f"{path} was trained on other data (inputs {ckpt.get('inputs')!r} != {self.inputs!r})")
        self.model.load_state_dict(ckpt["model"], strict=True)
        self.ema.load_state_dict(ckpt["ema_generator"], strict=True)
        self.disc.load_state_dict(ckpt["discriminator"], strict=True)
        for obj, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d"), (self.sched_g, "sched_g")):
            obj.load_state_dict(ckpt[key])
        set_rng_state(ckpt["rng"])
        self.usage = ckpt["usage"]
        self.step, self.log = ckpt["step"], ckpt["log"]

    # -- codebook care ------------------------------------------------------------------------------
    def _codebook_generator(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.s.seed * 104_729 + step)

    @torch.no_grad()
    def _encode_global_batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs (B, D, r, r) and gates (B,) of the whole global batch of `step`: every
        process computes the same, so codebooks set from them agree without communication and a
        torchrun run matches a single-process one."""
        x, gate = self.batch(step, whole=True)
        with precision.autocast(self.s.precision, self.d.device):
            return self.model.encode(x).float(), gate

    @torch.no_grad()
    def init_codebooks(self) -> None:
        """Before step 0: both codebooks from encoder outputs of the first batch (H from gated GTs)."""
        z, gate = self._encode_global_batch(0)
        g = self._codebook_generator(-1)
        self.model.quant_c.init_from(z, g)
        self.model.quant_h.init_from(z[gate > 0] if gate.any() else z, g)

    @torch.no_grad()
    def init_weights(self, path: str | Path) -> None:
        """Before step 0: encoder, codebooks and generator (its EMA too) from a trained stage-I
        checkpoint of the same config, e.g. one written by `iqpfr import-weights --format vqgan`.
        The discriminator and the optimiser start fresh."""
        model, _ = load_stage1_model(path, ema=False)
        ours, theirs = asdict(self.cfg), asdict(model.cfg)
        diff = {k: (theirs[k], v) for k, v in ours.items() if k not in ("hq_weight", "beta") and theirs[k] != v}
        if diff:
            raise ValueError(f"stage1.init_from {path} has another architecture (its value, ours): {diff}")
        self.model.load_state_dict(model.state_dict(), strict=True)
        self.ema.module.load_state_dict(self.model.generator.state_dict(), strict=True)

    @torch.no_grad()
    def restart_codes(self) -> dict[str, int]:
        """Move the codes no sample chose since the last restart onto encoder outputs of the
        current global batch; zero their Adam moments. Returns how many codes of each book moved."""
        z, gate = self._encode_global_batch(self.step - 1)
        counts = self.usage.to(self.d.device)
        if self.d.world > 1:
            dist.all_reduce(counts)
        g = self._codebook_generator(self.step)
        moved = {}
        books = (("c", self.model.quant_c, z, counts[0]), ("h", self.model.quant_h, z[gate > 0] if gate.any() else z, counts[1]))
        for name, q, zz, cnt in books:
            dead = q.restart_dead(cnt, zz, g)
            state = self.opt_g.state.get(q.embedding.weight, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key][dead] = 0
            moved[name] = int(dead.sum())
        self.usage.zero_()
        return moved

    # -- one step ---------------------------------------------------------------------------------
    def batch(self, step: int, whole: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(x in [-1,1] (b, 3, R, R), gate (b,)) for this process at `step` (`whole`: the global batch)."""
        rank, world = (0, 1) if whole else (self.d.rank, self.d.world)
        idx = batch_indices(step, len(self.images), self.s.batch_size, self.s.seed, rank, world)
        x = torch.stack([self.images[i][0] for i in idx])
        if self.s.hflip:
            flips = batch_flips(step, self.s.batch_size, self.s.seed, rank, world)[:len(idx)]
            x = torch.where(flips[:, None, None, None], x.flip(3), x)
        fmt = torch.channels_last  # faster on CUDA and on the CPU (fwd+bwd 0.81 -> 0.63 s, default stage I)
        return (x * 2 - 1).to(self.d.device, memory_format=fmt), self.gates[idx].to(self.d.device)

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        x, gate = self.batch(self.step)
        if self.step == 0 and self.s.init_from:
            self.init_weights(self.s.init_from)
        elif self.step == 0 and self.s.codebook_init == "encoder":
            self.init_codebooks()
        self.model.train()
        amp = precision.autocast(self.s.precision, self.d.device)
        gan_on = self.step >= self.s.gan_start
        with amp:
            x_rec, info = self.model_ddp(x, gate)
        x_rec = x_rec.float()  # losses in fp32
        l1 = (x_rec - x).abs().mean()
        perc = self.perceptual((x_rec.clamp(-1, 1) + 1) / 2, (x + 1) / 2) if self.perceptual is not None else x.new_zeros(())
        rec = l1 + self.s.perceptual_weight * perc
        vq_c, vq_h = losses.vq_total(info["vq_c"]), losses.vq_total(info["vq_h"])
        loss = rec + vq_c + vq_h
        g_loss, adv_w = x.new_zeros(()), x.new_zeros(())
        if gan_on:
            with amp:
                g_loss = losses.hinge_g_loss(self.disc_ddp(x_rec).float())
            adv_w = losses.adaptive_gan_weight(rec, g_loss, self.model.generator.last_layer, self.s.gan_weight)
            loss = loss + adv_w * g_loss
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_g.step()
        self.sched_g.step()
        self.ema.update_parameters(self.model.generator)
        d_loss = x.new_zeros(())
        if gan_on:
            with amp:
                d_loss = losses.hinge_d_loss(self.disc_ddp(x).float(), self.disc_ddp(x_rec.detach()).float())
            for group in self.opt_d.param_groups:  # D follows the cosine schedule of G's body
                group["lr"] = self.sched_g.get_last_lr()[0]
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()
        k = self.cfg.codebook_size
        self.usage[0] += torch.bincount(info["idx_c"].flatten().cpu(), minlength=k)
        if gate.any():
            self.usage[1] += torch.bincount(info["idx_h"][gate > 0].flatten().cpu(), minlength=k)
        self.step += 1
        moved = {"c": 0, "h": 0}
        if self.s.restart_every and self.step % self.s.restart_every == 0 and self.step < self.s.steps:
            moved = self.restart_codes()
        use_c = code_usage(info["idx_c"], k)
        use_h = code_usage(info["idx_h"][gate > 0], k) if gate.any() else {"perplexity": 0.0, "usage": 0.0}
        return {"step": self.step, "loss": loss.item(), "l1": l1.item(), "perceptual": perc.item(),
                "vq_c_codebook": info["vq_c"]["codebook"].mean().item(),
                "vq_c_commitment": info["vq_c"]["commitment"].mean().item(),
                "vq_h_codebook": info["vq_h"]["codebook"].mean().item(),
                "vq_h_commitment": info["vq_h"]["commitment"].mean().item(),
                "gan_g": g_loss.item(), "gan_d": d_loss.item(), "adv_weight": float(adv_w),
                "perplexity_c": use_c["perplexity"], "perplexity_h": use_h["perplexity"],
                "restarted_c": moved["c"], "restarted_h": moved["h"],
                "gate_fraction": gate.mean().item(), "lr": self.sched_g.get_last_lr()[0],
                "seconds": time.perf_counter() - t0}


def write_log_csv(rows: list[dict], path: str | Path) -> None:
    """The training log as CSV (for `dvc plots`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not rows:
        return
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# ----------------------------------------------------------------------------------------------
# perceptual term


class _SSIMLoss(nn.Module):
    """1 - SSIM on luma (`losses.ssim_luma`, pyiqa's "ssim" value), batch mean, for images in [0,1]:
    a training-free structural term."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - losses.ssim_luma(x.float(), y.float()).mean()


class _LPIPSLoss(nn.Module):
    """LPIPS with the VGG backbone (the paper's perceptual loss), inputs in [0,1]."""

    def __init__(self, device):
        super().__init__()
        import lpips

        self.net = lpips.LPIPS(net="vgg", verbose=False).to(device).eval().requires_grad_(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(x, y, normalize=True).mean()


def make_perceptual(name: str, device) -> nn.Module | None:
    """The perceptual term named in params: "lpips" (VGG; needs torchvision's ImageNet VGG16 in
    $TORCH_HOME/hub/checkpoints), "ssim" (`losses.ssim_luma`, no weights) or "none".

    LPIPS never falls back to a random backbone: missing weights are an error saying where the
    file goes.
    """
    if name == "none":
        return None
    if name == "ssim":
        return _SSIMLoss()
    if name == "lpips":
        from .quality import weights_home

        home = weights_home()
        try:
            return _LPIPSLoss(device)
        except Exception as err:  # noqa: BLE001 - torchvision raises URLError/RuntimeError offline
            raise RuntimeError(
                f"LPIPS(VGG) needs torchvision's ImageNet VGG16 weights (vgg16-397923af.pth) in "
                f"{home / 'hub' / 'checkpoints'}; they could not be loaded ({type(err).__name__}: {err}). "
                "Put the file there, or set stage1.perceptual to 'ssim' and say so in your report.") from err
    raise ValueError(f"unknown perceptual loss {name!r}")
