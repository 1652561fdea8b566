"""Stage II: training the quality-conditioned Transformer with discrete quality optimisation
(SPEC 1.4-1.5), and its pipeline stage.

Per step, for GTs x_h of the global batch (same deterministic order and flips as stage I):
  x_l   = degrade(x_h)                  seeded per (seed, step, sample): the LQ, made on the fly
  s     = bin(S(x_h))                   the GT's normalised quality score (scoring stage)
  z_l   = E(x_l) + Emb[s]               (eq. 12)
  l_c, l_h = T(z_l)                     (eq. 13-14)
  L_code = 0.5 CE(l_c, idx_c) + 0.5 CE(l_h, idx_h)          targets from the latent-targets stage
  L_feat = || z_l - sg(C[idx_c] + lambda H[idx_h]) ||^2
  L_q    = mean(max(0, 1 - Q(G(z_l + sg(z_hat - z_l)))))    z_hat = C[argmax l_c] + lambda H[argmax l_h]
  L_II   = w_feat L_feat + L_code + lambda_q L_q  (L_q from `quality_start` on)

The forward passes run under bf16 autocast where the device has native bf16 (`precision.resolve`:
CUDA, or a CPU with AVX512-bf16/AMX), fp32 elsewhere; the choice is stored in the checkpoint.
Under torchrun every process takes its share of the global batch and the gradients are averaged
with all_reduce.

The score embedding starts at zero and gets a larger learning rate (`score_lr_mult`): at the
shared rate it barely leaves zero in a few hundred steps, and the Transformer then learns to read
a GT's quality off the LQ instead of off S. With `balance_bins` every score bin is drawn equally
often: FFHQ-like GTs crowd into the top bins, so the low bins' embeddings would otherwise see a few
dozen GTs in a whole run.

The quality term's gradient reaches z_l only through the straight-through path, so it trains E
and the score embedding, never G or the codebooks, and the decoded image stays made of codebook
entries. `quality_mode: continuous` is the counter-example: G decodes z_l itself.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import data, precision, quality, safeload
from .config import (ConfigError, DataConfig, DegradeConfig, Params, Stage2Config, TransformerParams, VqganParams,
                     variant)
from .codebook import STAGE1, vqgan_config
from .degrade import DegradeRanges, degrade
from .pipeline import degrade_ranges, write_metrics
from .task import FACE, Task
from .train import (CODE_FILES, Dist, TrainingLoop, batch_flips, batch_indices, fingerprint, load_checkpoint, load_stage1_model,
                    resume_or_restart, rng_state, save_atomic, set_rng_state, setup_distributed, write_log_csv)
from .transformer import NUM_BINS, QualityRestorer, TransformerConfig, code_losses, score_to_bin

STAGE2 = FACE.stage2  # the face task's files; other tasks pass their Task
VARIANTS = FACE.variants  # models/variants/<name>/restorer.pt
SEEDS = Path("models/seeds")  # models/seeds/<row>/<seed>/restorer.pt
STAGE2_FORMAT = "iqpfr.stage2/3"  # /2: stage-I encoder of iqpfr.stage1/2; /3: bias-free code heads, on iqpfr.stage1/3


def code_hash() -> str:
    """sha256 of the model and training source of stages I and II (see train.code_hash)."""
    import hashlib

    h = hashlib.sha256()
    for name in CODE_FILES + ("transformer.py", "conditioned.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Stage2Settings:
    steps: int
    batch_size: int
    lr: float
    betas: tuple[float, float] = (0.9, 0.99)
    ema_decay: float = 0.995
    feat_weight: float = 1.0
    quality_weight: float = 0.0  # lambda_q; 0 switches the quality loss off
    quality_start: int = 0
    quality_mode: str = "discrete"  # "discrete" (straight-through, the method) or "continuous" (counter-example)
    score_lr_mult: float = 1.0  # the score embedding's lr is lr * this
    balance_bins: bool = False  # draw GTs so that every score bin is seen equally often
    score_dropout: float = 0.0  # probability that a sample's score bin is replaced by the "no score" bin
    precision: str = "fp32"  # resolved: "fp32" or "bf16" (autocast)
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 1000


def balanced_batch_indices(step: int, groups: torch.Tensor, batch_size: int, seed: int, rank: int = 0,
                           world: int = 1) -> list[int]:
    """Like `batch_indices`, but every group (e.g. a score bin) is drawn equally often: each
    sample's weight is 1 / (size of its group), drawn with replacement by a generator seeded by
    (seed, step). `groups` (N,) holds a group id per sample. A pure function of its arguments."""
    counts = torch.bincount(groups)
    weights = 1.0 / counts[groups].double()
    g = torch.Generator().manual_seed(seed * 1_000_003 + 500_009 + step)
    glob = torch.multinomial(weights, batch_size, replacement=True, generator=g).tolist()
    return glob[rank::world]


def score_dropout_mask(step: int, batch_size: int, p: float, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Which samples of this process's share of step `step`'s batch lose their score (bool), each
    with probability p; a pure function of its arguments, like the flips."""
    g = torch.Generator().manual_seed(seed * 6_700_417 + 900_001 + step)
    return (torch.rand(batch_size, generator=g) < p)[rank::world]


class DegradedLQ:
    """LQ made on the fly from the GT by the blind-restoration degradation (faces)."""

    def __init__(self, ranges: DegradeRanges):
        self.ranges = ranges

    def __call__(self, hq: torch.Tensor, index: int, flip: bool, rng: np.random.Generator) -> torch.Tensor:
        """hq (3, R, R) in [0,1], already flipped -> LQ (3, R, R) in [0,1]."""
        return torch.from_numpy(degrade(hq.permute(1, 2, 0).numpy(), rng, self.ranges)[0]).permute(2, 0, 1)


class PairedLQ:
    """The stored LQ input of GT `index` (underwater: the raw image beside each reference), flipped
    with its GT. `images` is a dataset aligned with the GTs (same order)."""

    def __init__(self, images):
        self.images = images

    def __call__(self, hq: torch.Tensor, index: int, flip: bool, rng: np.random.Generator) -> torch.Tensor:
        x = self.images[index][0]
        return x.flip(2) if flip else x


class Stage2Trainer(TrainingLoop):
    """Trains encoder + Transformer of a QualityRestorer. `targets` (N, 2, r, r) per codebook
    (original, flipped GT); `scores` (N,) normalised GT scores; `lq` makes the LQ input of a GT
    (`DegradedLQ` or `PairedLQ`); `q` the differentiable prior or None."""

    def __init__(self, model: QualityRestorer, settings: Stage2Settings, images, targets: dict, scores: torch.Tensor,
                 lq: DegradedLQ | PairedLQ, q: torch.nn.Module | None = None, dist_info: Dist | None = None,
                 inputs: str = ""):
        self.m, self.s, self.images, self.targets = model, settings, images, targets
        self.inputs = inputs  # fingerprint of the data, scores, targets and LQ source: checked on resume
        self.scores, self.lq, self.q = scores.float(), lq, q
        self.d = dist_info or Dist()
        self.params = model.trainable_parameters()
        trained = torch.nn.ModuleDict({"encoder": model.encoder, "transformer": model.transformer})
        self.trained = trained
        self.ema = AveragedModel(trained, multi_avg_fn=get_ema_multi_avg_fn(settings.ema_decay))
        score = [p for n, p in model.transformer.named_parameters() if n.startswith(("score_map", "score_vec", "modulation"))]
        rest = [p for p in self.params if all(p is not q for q in score)]
        groups = [{"params": rest}] + ([{"params": score, "lr": settings.lr * settings.score_lr_mult}] if score else [])
        self.opt = torch.optim.Adam(groups, lr=settings.lr, betas=settings.betas)
        self.step, self.log = 0, []

    def state(self) -> dict:
        return {"format": STAGE2_FORMAT, "config": asdict(self.m.cfg), "train_config": asdict(self.s),
                "stage1_config": asdict(self.m.stage1.cfg), "code": code_hash(), "step": self.step,
                "model": self.trained.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                "rng": rng_state(), "log": self.log, "inputs": self.inputs}

    def save(self, path) -> None:
        if self.d.main:
            save_atomic(self.state(), path)

    def resume(self, path) -> None:
        ckpt = load_checkpoint(path, STAGE2_FORMAT)
        same = (ckpt["config"] == asdict(self.m.cfg) and ckpt["code"] == code_hash()
                and ckpt["stage1_config"] == asdict(self.m.stage1.cfg)
                and {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["train_config"].items()} == asdict(self.s))
        if not same:
            raise ValueError(f"{path} was written with other settings, config or code")
        if ckpt.get("inputs", "") != self.inputs:
            raise ValueError(f"{path} was trained on other data (inputs {ckpt.get('inputs')!r} != {self.inputs!r})")
        self.trained.load_state_dict(ckpt["model"], strict=True)
        self.ema.load_state_dict(ckpt["ema"], strict=True)
        self.opt.load_state_dict(ckpt["opt"])
        set_rng_state(ckpt["rng"])
        self.step, self.log = ckpt["step"], ckpt["log"]

    def batch(self, step: int):
        """(x_l in [0,1] (b,3,R,R), idx_c (b,T), idx_h (b,T), score bins (b,)) for this process."""
        if self.s.balance_bins:
            idx = balanced_batch_indices(step, score_to_bin(self.scores), self.s.batch_size, self.s.seed,
                                         self.d.rank, self.d.world)
        else:
            idx = batch_indices(step, len(self.images), self.s.batch_size, self.s.seed, self.d.rank, self.d.world)
        flips = batch_flips(step, self.s.batch_size, self.s.seed, self.d.rank, self.d.world)[:len(idx)]
        lq = []
        for j, (i, f) in enumerate(zip(idx, flips.tolist())):
            x = self.images[i][0]
            x = x.flip(2) if f else x
            # seeded by the sample's position in the *global* batch: the same LQ whatever the process count
            rng = np.random.default_rng([self.s.seed, step, self.d.rank + j * self.d.world])
            lq.append(self.lq(x, i, f, rng))
        f = flips.long()
        tc = self.targets["idx_c"][idx, f].long().flatten(1)
        th = self.targets["idx_h"][idx, f].long().flatten(1)
        bins = score_to_bin(self.scores[idx])
        if self.s.score_dropout > 0:  # classifier-free guidance needs the model to learn without a score too
            drop = score_dropout_mask(step, self.s.batch_size, self.s.score_dropout, self.s.seed, self.d.rank, self.d.world)
            bins = torch.where(drop[:len(idx)], NUM_BINS, bins)
        dev = self.d.device
        return torch.stack(lq).to(dev), tc.to(dev), th.to(dev), bins.to(dev)

    def losses(self, x_l, idx_c, idx_h, bins) -> tuple[torch.Tensor, dict]:
        m = self.m
        z_l = m.latent(x_l, bins)
        lc, lh = m.transformer(z_l, bins)
        dual = m.cfg.codebooks == "dual"
        l_code = code_losses(lc, lh, idx_c, idx_h, m.cfg.codebooks)
        with torch.no_grad():
            target = m.codes(idx_c, idx_h)
        l_feat = F.mse_loss(z_l, target)
        loss = self.s.feat_weight * l_feat + l_code
        l_q = z_l.new_zeros(())
        q_mean = float("nan")
        if self.q is not None and self.s.quality_weight > 0 and self.step >= self.s.quality_start:
            z_hat = m.codes(lc.argmax(-1), lh.argmax(-1)).detach()
            z_in = z_l + (z_hat - z_l).detach() if self.s.quality_mode == "discrete" else z_l
            q = self.q(m.decode(z_in))
            l_q = F.relu(1 - q).mean()
            q_mean = q.mean().item()
            loss = loss + self.s.quality_weight * l_q
        acc_c = (lc.argmax(-1) == idx_c).float().mean().item()
        ce_c = F.cross_entropy(lc.flatten(0, 1), idx_c.flatten()).item()
        # a single-codebook model has no H target: its (untrained) H head is not reported
        acc_h = (lh.argmax(-1) == idx_h).float().mean().item() if dual else float("nan")
        ce_h = F.cross_entropy(lh.flatten(0, 1), idx_h.flatten()).item() if dual else float("nan")
        return loss, {"loss": loss.item(), "ce_c": ce_c, "ce_h": ce_h, "feat": l_feat.item(), "quality": l_q.item(),
                      "q_mean": q_mean, "acc_c": acc_c, "acc_h": acc_h}

    def train_step(self) -> dict:
        t0 = time.perf_counter()
        self.m.train()
        x_l, idx_c, idx_h, bins = self.batch(self.step)
        with precision.autocast(self.s.precision, self.d.device):
            loss, row = self.losses(x_l, idx_c, idx_h, bins)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.d.world > 1:  # average gradients over processes (what DDP does, done explicitly)
            for p in self.params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.d.world
        self.opt.step()
        self.ema.update_parameters(self.trained)
        self.step += 1
        return {"step": self.step, **row, "seconds": time.perf_counter() - t0}


def load_restorer(path=STAGE2, stage1_path=STAGE1, ema: bool = True, guidance: float = 1.0) -> tuple[QualityRestorer, dict]:
    """The trained stage-II restorer (EMA weights by default), frozen, in eval mode, restoring with
    `guidance` by default (params.yaml `transformer.guidance`; != 1 needs a model trained with score dropout)."""
    ckpt = load_checkpoint(path, STAGE2_FORMAT)
    if ckpt["step"] <= 0:
        raise ValueError(f"{path} holds an untrained model (step 0)")
    stage1, _ = load_stage1_model(stage1_path)
    if asdict(stage1.cfg) != ckpt["stage1_config"]:
        raise ValueError(f"{path} was trained on another stage-I model than {stage1_path}")
    model = QualityRestorer(stage1, TransformerConfig(**ckpt["config"]))
    state = ckpt["model"]
    if ema:
        state = {k.removeprefix("module."): v for k, v in ckpt["ema"].items() if k != "n_averaged"}
    torch.nn.ModuleDict({"encoder": model.encoder, "transformer": model.transformer}).load_state_dict(state, strict=True)
    if guidance != 1.0 and not model.cfg.null_bin:
        raise ValueError(f"{path}: guidance {guidance} needs a model trained with score dropout (transformer.score_dropout > 0)")
    model.guidance = guidance
    return model.eval().requires_grad_(False), {"step": ckpt["step"], "train_config": ckpt["train_config"]}


# ----------------------------------------------------------------------------------------------
# pipeline stage


def transformer_config(data_cfg: DataConfig, vqgan: VqganParams, tp: TransformerParams) -> TransformerConfig:
    v = vqgan_config(data_cfg, vqgan)
    return TransformerConfig(v.latent_size, v.emb_dim, v.codebook_size, tp.n_layers, tp.n_heads, tp.d_model, tp.d_ff,
                             tp.conditioning, tp.dropout, tp.codebooks, null_bin=tp.score_dropout > 0,
                             score_trend=tp.score_trend, patch=tp.patch)


def stage2_settings(s2: Stage2Config, device: torch.device | str = "cpu", score_dropout: float = 0.0) -> Stage2Settings:
    """The loop's settings from params.yaml's `stage2` section, with the precision resolved for `device`."""
    return Stage2Settings(steps=s2.steps, batch_size=s2.batch_size, lr=s2.lr, betas=tuple(s2.betas),
                          ema_decay=s2.ema_decay, feat_weight=s2.feat_weight, quality_weight=s2.quality_weight,
                          quality_start=s2.quality_start, quality_mode=s2.quality_mode,
                          score_lr_mult=s2.score_lr_mult, balance_bins=s2.balance_bins, score_dropout=score_dropout, precision=precision.resolve(s2.precision, device),
                          seed=s2.seed, log_every=s2.log_every, checkpoint_every=s2.checkpoint_every)


def load_targets(n: int, task: Task = FACE) -> dict:
    """The task's latent targets, checked against its training set (n GTs) and stage-I checkpoint.
    Read as data (weights_only: tensors, strings and numbers only)."""
    t = safeload.load(task.targets, "latent-targets file")
    if t.get("format") != "iqpfr.targets/1" or len(t["idx_c"]) != n:
        raise ValueError(f"{task.targets} does not match the training set ({n} GTs): re-run latent_targets")
    if t["stage1_sha256"] != data.sha256_file(task.stage1):
        raise ValueError(f"{task.targets} was computed with another stage-I checkpoint: re-run latent_targets")
    return t


def start_from(model: QualityRestorer, path: Path, ckpt: dict | None = None) -> str:
    """Fine-tuning: load the raw trained weights (encoder + Transformer) of the stage-II checkpoint
    at `path` into `model`, whose Transformer config and stage-I config must equal the checkpoint's
    (ValueError naming the difference); `ckpt`: that file already read. Returns the weights' digest (part of
    the run's fingerprint)."""
    ckpt = ckpt if ckpt is not None else load_checkpoint(path, STAGE2_FORMAT)
    for key, mine in (("config", asdict(model.cfg)), ("stage1_config", asdict(model.stage1.cfg))):
        if ckpt[key] != mine:
            diff = sorted(k for k in mine if ckpt[key].get(k) != mine[k])
            raise ValueError(f"cannot fine-tune from {path}: its {key} differs in {diff}")
    torch.nn.ModuleDict({"encoder": model.encoder, "transformer": model.transformer}).load_state_dict(ckpt["model"], strict=True)
    return safeload.tensor_digest(ckpt["model"])


def stage2_trainer(data_cfg: DataConfig, degrade_cfg: DegradeConfig, vqgan: VqganParams, tp: TransformerParams,
                   s2: Stage2Config, checkpoint: Path, progress=print, task: Task = FACE,
                   init: Path | None = None) -> Stage2Trainer:
    """The stage-II trainer of a task (its stage I, GTs, scores, latent targets, LQ source and, with
    a quality loss, its prior), resumed from `checkpoint` when that is compatible, else fresh: from
    stage I, or fine-tuned from the trained stage-II checkpoint `init` (`start_from`)."""
    d = setup_distributed()
    stage1, _ = load_stage1_model(task.stage1, expect=vqgan_config(data_cfg, vqgan))
    stage1 = stage1.to(d.device)
    images = data.ManifestDataset(task.world / "train")
    scores = torch.tensor(pd.read_csv(task.scores / "train.csv")["S"].to_numpy())
    q = None
    if s2.quality_weight > 0:
        q = quality.load_quality(task.scores / "norm_stats.json", str(d.device), task.prior)
    settings = stage2_settings(s2, d.device, tp.score_dropout)
    targets = load_targets(len(images), task)
    if task.paired_lq:
        lq = PairedLQ(data.ManifestDataset(task.world / "train", "raw_file"))
        lq_source = ("paired", list(lq.images.frame["raw_sha256"]))
    else:
        lq = DegradedLQ(degrade_ranges(degrade_cfg))
        lq_source = ("degrade", lq.ranges)
    prior = safeload.tensor_digest(safeload.load(task.prior, "checkpoint")["state_dict"]) if q is not None else None
    init_ckpt = load_checkpoint(init, STAGE2_FORMAT) if init is not None else None  # read once, used twice
    start = safeload.tensor_digest(init_ckpt["model"]) if init_ckpt is not None else None
    inputs = fingerprint(list(images.frame["sha256"]), scores, targets["idx_c"], targets["idx_h"], lq_source, prior, start)

    def fresh() -> Stage2Trainer:
        torch.manual_seed(s2.seed)
        model = QualityRestorer(stage1, transformer_config(data_cfg, vqgan, tp)).to(d.device)
        if init is not None:
            start_from(model, init, init_ckpt)
            progress(f"fine-tuning from {init}")
        return Stage2Trainer(model, settings, images, targets, scores, lq, q, d, inputs)

    return resume_or_restart(fresh, checkpoint, progress)


def train_conditioned(data_cfg: DataConfig, degrade_cfg: DegradeConfig, vqgan: VqganParams, tp: TransformerParams,
                      s2: Stage2Config, progress=print, checkpoint: Path | None = None,
                      log_csv: Path | None = None, task: Task = FACE, init: Path | None = None) -> dict:
    """Train (or resume) stage II of a task, from stage I or fine-tuned from `init` (a stage-II
    checkpoint); torchrun-aware. Writes `checkpoint` (default: the task's stage-II file) and the log
    CSV (default: <task metrics>/train_conditioned_log.csv)."""
    checkpoint = checkpoint or task.stage2
    log_csv = log_csv or task.metrics / "train_conditioned_log.csv"
    trainer = stage2_trainer(data_cfg, degrade_cfg, vqgan, tp, s2, checkpoint, progress, task, init)
    model, d = trainer.m, trainer.d
    t0, start = time.time(), trainer.step
    log = trainer.train(checkpoint=checkpoint, progress=lambda r: progress(
        f"step {r['step']:5d}  loss {r['loss']:.3f}  ce C {r['ce_c']:.3f} H {r['ce_h']:.3f}  feat {r['feat']:.4f}  "
        f"q {r['quality']:.3f}  acc C {r['acc_c']:.3f} H {r['acc_h']:.3f}  {r['seconds']:.2f}s/step"))
    if d.main:
        write_log_csv(log, log_csv)
    last = log[-1] if log else {}
    return {"steps": trainer.step, "steps_this_run": trainer.step - start, "seconds_this_run": time.time() - t0,
            "finetuned_from": str(init) if init is not None else None,
            "final_acc_c": last.get("acc_c"), "final_acc_h": last.get("acc_h"),
            "parameters": {"encoder": sum(p.numel() for p in model.encoder.parameters()),
                           "transformer": sum(p.numel() for p in model.transformer.parameters())}}


def train_variant(params: Params, name: str, progress=print, task: Task = FACE, init: Path | None = None) -> dict:
    """Stage `train_variant@<name>`: stage II with the variant's overrides (params.yaml `variants`),
    sharing the data, the prior, stage I and its latent targets with the main model; from stage I or
    fine-tuned from `init`. `params` are the task's (config.task_params). Writes <task
    models>/variants/<name>/restorer.pt and <task metrics>/variants/<name>{.json,_log.csv}."""
    p = variant(params, name)
    out = train_conditioned(p.data, p.degrade, p.vqgan, p.transformer, p.stage2, progress,
                            checkpoint=task.variants / name / "restorer.pt",
                            log_csv=task.metrics / "variants" / f"{name}_log.csv", task=task, init=init)
    out["overrides"] = params.variants[name]
    write_metrics(f"variants/{name}", out, task)
    return out


def finetune_source(params: Params, task_name: str, row: str) -> Path | None:
    """The face checkpoint that row `row` ("main" or the task's baseline variant) of task `task_name`
    is fine-tuned from (params.yaml `<task>.finetune`), or None: from stage I."""
    face_row = getattr(getattr(params, task_name), "finetune", {}).get(row)
    if face_row is None:
        return None
    return FACE.stage2 if face_row == "iqpfr" else FACE.variants / face_row / "restorer.pt"


def seed_params(params: Params, row: str, seed: int) -> Params:
    """The params of `row` ("iqpfr" or a variant) trained with stage-II seed `seed` for `seeds.steps`
    steps. `quality_start` is scaled by the same factor as the steps, and the EMA decay d becomes
    d ** (stage2.steps / seeds.steps), so that the average weighs the same fractions of training:
    d_seed ** seeds.steps = d ** stage2.steps. (With 0.995 unscaled, a 100-step run would keep
    0.995^99 = 61% of its step-1 weights; scaled, 8%, as the 500-step main run does.)"""
    p = params if row == "iqpfr" else variant(params, row)
    s2 = p.stage2
    ratio = s2.steps / params.seeds.steps
    start = round(s2.quality_start / ratio)
    decay = s2.ema_decay ** ratio if s2.ema_decay > 0 else 0.0
    return replace(p, stage2=replace(s2, seed=seed, steps=params.seeds.steps, quality_start=start, ema_decay=decay))


def seed_checkpoint(row: str, seed: int) -> Path:
    return SEEDS / row / str(seed) / "restorer.pt"


def train_seed(params: Params, row: str, seed: int, progress=print) -> dict:
    """Stage `train_seed@<row>-<seed>`: `row` trained again with another stage-II seed (training
    order, LQ degradations and initialisation all follow the seed). Writes
    models/seeds/<row>/<seed>/restorer.pt and reports/metrics/seeds/<row>_<seed>{.json,_log.csv}."""
    if row not in params.seeds.rows or seed not in params.seeds.extra:
        raise ConfigError(f"seeds: ({row!r}, {seed}) is not in seeds.rows x seeds.extra")
    p = seed_params(params, row, seed)
    out = train_conditioned(p.data, p.degrade, p.vqgan, p.transformer, p.stage2, progress,
                            checkpoint=seed_checkpoint(row, seed), log_csv=FACE.metrics / "seeds" / f"{row}_{seed}_log.csv")
    out.update({"row": row, "seed": seed, "quality_start": p.stage2.quality_start})
    write_metrics(f"seeds/{row}_{seed}", out)
    return out


BIN_CENTRES = [round(0.05 + 0.1 * b, 2) for b in range(10)]


@torch.no_grad()
def score_sweep(model: QualityRestorer, lq: torch.Tensor, scores=BIN_CENTRES, batch: int = 64) -> dict[float, torch.Tensor]:
    """Restore LQ images (N, 3, R, R) in [0,1] at each requested quality S -> {S: (N, 3, R, R)}."""
    return {s: torch.cat([model.restore(lq[i:i + batch], s) for i in range(0, len(lq), batch)]) for s in scores}


@torch.no_grad()
def analysis(data_cfg: DataConfig, count: int = 64, checkpoint: Path | None = None, task: Task = FACE,
             guidance: float = 1.0) -> dict:
    """The S sweep on held-out test pairs: outputs at the ten bin centres, their prior score
    (normalised with the training statistics) and its Spearman correlation with S, and, where the
    pairs have pristine oracles, the outputs' *true* quality (the task's definition, as in its world)
    per S: `true_quality_by_S` and `true_quality_gain` (at S = 0.95 minus at S = 0.05). The model
    restores with `guidance` (transformer.guidance)."""
    from .iqanet import spearman
    from .pipeline import _load_stack

    model, info = load_restorer(checkpoint or task.stage2, task.stage1, guidance=guidance)
    pairs = task.testset / "pairs"
    lq, frame = _load_stack(pairs, "file")
    hq, _ = _load_stack(pairs, "hq_file")
    lq, hq = lq[:count], hq[:count]
    oracle = _load_stack(pairs, "oracle_file")[0][:count] if "oracle_file" in frame else None
    stats = quality.NormStats.load(task.scores / "norm_stats.json")
    metrics = {n: quality.make_metric(n, "cpu", task.prior) for n in stats.ensemble}

    def prior_score(x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(stats.ensemble_score({n: m(x).numpy() for n, m in metrics.items()}))

    def true_quality(x: torch.Tensor) -> np.ndarray:
        return task.true_quality(x, oracle)

    sweep = score_sweep(model, lq)
    per_s = {s: prior_score(x) for s, x in sweep.items()}
    means = [float(v.mean()) for v in per_s.values()]
    bins = pd.read_csv(task.scores / "train.csv")["bin"].value_counts().reindex(range(10), fill_value=0).tolist()
    summary = {"spearman_S_vs_output_score": spearman(BIN_CENTRES, means),
               "output_score_at_0.05": means[0], "output_score_at_0.95": means[-1],
               "output_score_by_S": dict(zip(map(str, BIN_CENTRES), means)),
               "lq_score": float(prior_score(lq).mean()), "hq_score": float(prior_score(hq).mean()),
               "training_gts_per_bin": bins}
    true_q = None
    if oracle is not None:
        true_q = {s: true_quality(x) for s, x in sweep.items()}
        tq = [float(v.mean()) for v in true_q.values()]
        summary.update({"true_quality_by_S": dict(zip(map(str, BIN_CENTRES), tq)),
                        "true_quality_gain": tq[-1] - tq[0], "spearman_S_vs_true_quality": spearman(BIN_CENTRES, tq),
                        "lq_true_quality": float(true_quality(lq).mean()), "hq_true_quality": float(true_quality(hq).mean())})
    summary.update(embedding_strength(model, lq))
    return {"step": info["step"], "lq": lq, "hq": hq, "sweep": sweep, "scores": per_s, "true_quality": true_q,
            "summary": summary}


@torch.no_grad()
def embedding_strength(model: QualityRestorer, lq: torch.Tensor) -> dict[str, float]:
    """How far the score embedding moves the latent: RMS of Emb[9] - Emb[0] (the change from the
    lowest to the highest bin) against the RMS of the encoder's latent E(x_l) of LQ images
    (N, 3, R, R) in [0,1]. Empty for models without the "add" embedding."""
    if model.transformer.score_map is None:
        return {}
    low, high = model.transformer.embedding(torch.tensor([0, NUM_BINS - 1], device=lq.device))  # (D, r, r) each
    z = model.encoder(lq * 2 - 1)
    return {"embedding_rms_bin9_minus_bin0": float((high - low).pow(2).mean().sqrt()),
            "latent_rms": float(z.pow(2).mean().sqrt())}
