"""`params.yaml` -> typed, validated dataclasses.

Every section of `params.yaml` is a dataclass below. Loading is strict: an unknown key, a missing
key, or a value of the wrong type is an error that names the key (`scoring.treshold: unknown
key; did you mean 'threshold'?`). A float must be written with a decimal point or exponent that
YAML 1.1 recognises (`1.0e-4`, not `1e-4`): PyYAML reads `1e-4` as a string, and this loader then
refuses it instead of passing a string on.
"""
from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields, is_dataclass, replace
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A params file does not match the schema; the message names the offending key."""


@dataclass(frozen=True)
class DataConfig:
    """Where training GTs come from and at what size."""

    source: str  # "synthetic" (the procedural world) or "folder" (aligned faces in `folder`)
    folder: str  # folder of aligned face images when source == "folder"
    resolution: int  # square side in pixels of every image in the pipeline
    num_train: int  # synthetic GTs (ignored for folders: every readable image is used)
    num_holdout: int  # held-out GTs never trained on (synthetic), or images held out of a folder
    seed: int  # world seed: every synthetic face is a function of (seed, split, index)
    workers: int  # processes used to generate or ingest images

    def validate(self) -> None:
        _choice("data.source", self.source, ("synthetic", "folder"))
        _range("data.resolution", self.resolution, 16, 2048)
        if self.source == "folder" and not self.folder:
            raise ConfigError("data.folder: must name a folder when data.source is 'folder'")
        _range("data.num_train", self.num_train, 1, 10_000_000)
        _range("data.num_holdout", self.num_holdout, 1, 10_000_000)
        _range("data.workers", self.workers, 1, 256)


@dataclass(frozen=True)
class CaptureConfig:
    """The synthetic capture degradation and the target distribution of GT true quality."""

    clean_fraction: float
    peak: float
    peak_width: float
    tail_fraction: float
    tail_low: float
    max_blur_sigma: float  # at severity 1, in 512 px units
    max_noise: float  # Gaussian sigma x/255 at severity 1
    min_jpeg: int  # JPEG quality at severity 1

    def validate(self) -> None:
        for k in ("clean_fraction", "peak", "tail_fraction", "tail_low"):
            _range(f"capture.{k}", getattr(self, k), 0.0, 1.0)
        if self.clean_fraction + self.tail_fraction > 1:
            raise ConfigError("capture: clean_fraction + tail_fraction must be <= 1")
        _range("capture.min_jpeg", self.min_jpeg, 1, 100)


@dataclass(frozen=True)
class DegradeConfig:
    """LQ degradation ranges at 512 px (SPEC 1.4); scaled by resolution/512 where applied."""

    blur_kernel_size: int
    blur_sigma: list[float]
    aniso_prob: float
    downsample: list[float]
    noise: list[float]
    jpeg: list[int]
    colour_jitter_prob: float
    gray_prob: float

    def validate(self) -> None:
        for k in ("blur_sigma", "downsample", "noise", "jpeg"):
            v = getattr(self, k)
            if len(v) != 2 or v[0] > v[1]:
                raise ConfigError(f"degrade.{k}: must be [low, high] with low <= high, got {v}")
        _range("degrade.jpeg", self.jpeg[0], 1, 100)
        _range("degrade.jpeg", self.jpeg[1], 1, 100)
        for k in ("aniso_prob", "colour_jitter_prob", "gray_prob"):
            _range(f"degrade.{k}", getattr(self, k), 0.0, 1.0)


@dataclass(frozen=True)
class TestsetConfig:
    """Seeded LQ/HQ test pairs (CelebA-Test style) and real LQ folders without GT."""

    hq_folder: str  # HQ images to degrade; "" = fresh synthetic faces of the `test` split
    num: int  # synthetic test faces (ignored when hq_folder is set)
    seed: int  # degradation seed: LQ i uses default_rng([seed, i])
    lq_folders: dict[str, str]  # name -> folder of real LQ faces (no GT)
    expected_counts: dict[str, int]  # name -> number of images the set must hold (0 = unchecked)

    def validate(self) -> None:
        _range("testset.num", self.num, 1, 1_000_000)


@dataclass(frozen=True)
class IqaConfig:
    """Labelled (synthetic) or ranking (folder) data for the learned NR-IQA prior."""

    num_train: int
    num_val: int
    num_unseen: int  # split whose degradation mixture the prior never sees in training
    restorer_fraction: float  # share of train/val images with restorer-like artefacts instead of capture flaws
    rank_levels: int  # distortion levels per type for the ranking objective on real folders

    def validate(self) -> None:
        for k in ("num_train", "num_val", "num_unseen"):
            _range(f"iqa.{k}", getattr(self, k), 1, 10_000_000)
        _range("iqa.rank_levels", self.rank_levels, 2, 20)
        _range("iqa.restorer_fraction", self.restorer_fraction, 0.0, 1.0)


@dataclass(frozen=True)
class HelperConfig:
    """The helper restorer whose labelled outputs join the face prior's training data (iqpfr/helper.py)."""

    steps: int  # its stage-I steps; 0 = no helper (the prior trains on data/iqa alone)
    batch_size: int
    lr: float
    min_quality: float  # it trains on the IQA training images of at least this true quality
    draws: int  # degraded copies of each IQA training image it restores (outputs = draws x iqa.num_train)
    seed: int  # its own seed (weights, batches and the degradation of its inputs)

    def validate(self) -> None:
        _range("helper.steps", self.steps, 0, 10_000_000)
        _range("helper.batch_size", self.batch_size, 1, 4096)
        _range("helper.lr", self.lr, 1e-7, 1.0)
        _range("helper.min_quality", self.min_quality, 0.0, 1.0)
        _range("helper.draws", self.draws, 1, 100)


@dataclass(frozen=True)
class PriorConfig:
    """The compact learned NR-IQA network and its training."""

    width: int  # channels of the first conv stage (doubled at each of 4 stages, capped at 8x)
    epochs: int
    batch_size: int
    lr: float
    seed: int
    input_pool: int  # the network averages input_pool x input_pool pixel blocks first (1: full resolution)

    def validate(self) -> None:
        _range("prior.width", self.width, 4, 512)
        _range("prior.input_pool", self.input_pool, 1, 16)
        _range("prior.epochs", self.epochs, 1, 10_000)
        _range("prior.batch_size", self.batch_size, 2, 4096)
        _range("prior.lr", self.lr, 1e-8, 1.0)


@dataclass(frozen=True)
class ScoringConfig:
    """The quality prior: which NR-IQA metrics form the ensemble S, the gate, reference metrics."""

    metrics: list[str]  # ensemble members: "learned" or pyiqa metric names
    reference_metrics: list[str]  # scored and reported beside the prior, never in the ensemble
    reference_count: int  # images scored by the reference metrics (they are slow)
    reference_size: int  # images smaller than this are bicubic-upsampled for reference metrics
    threshold: float  # S_thr on the normalised ensemble score
    strict_fraction: float  # the stricter gate keeps the top fraction (ablation)
    batch_size: int
    offline: bool  # never try the hub: a missing weight file is an immediate, explicit error

    def validate(self) -> None:
        if not self.metrics:
            raise ConfigError("scoring.metrics: name at least one metric")
        _open_range("scoring.threshold", self.threshold, 0.0, 1.0)
        _range("scoring.strict_fraction", self.strict_fraction, 0.0, 1.0)
        _range("scoring.batch_size", self.batch_size, 1, 4096)


@dataclass(frozen=True)
class VqganParams:
    """Stage-I architecture; the fields of `iqpfr.vqgan.VQGANConfig` except the resolution,
    which comes from `data.resolution` (a test checks the two stay in step)."""

    nf: int
    ch_mult: list[int]
    num_res_blocks: int
    attn_resolutions: list[int]
    emb_dim: int
    codebook_size: int
    beta: float
    hq_weight: float  # lambda of z_c + lambda * m * z_h
    fusion: str  # "add" (paper) or "attention" (ablation)
    fusion_heads: int
    disc_nf: int
    disc_layers: int

    def validate(self) -> None:
        _choice("vqgan.fusion", self.fusion, ("add", "attention"))
        _range("vqgan.nf", self.nf, 1, 4096)
        if not self.ch_mult:
            raise ConfigError("vqgan.ch_mult: give at least one level")
        _range("vqgan.codebook_size", self.codebook_size, 2, 1_000_000)
        _range("vqgan.hq_weight", self.hq_weight, 0.0, 10.0)


@dataclass(frozen=True)
class Stage1Config:
    """Stage-I training (SPEC 1.2)."""

    steps: int
    batch_size: int  # global batch (split over processes under torchrun)
    lr: float
    betas: list[float]
    lr_min_ratio: float  # cosine schedule from lr down to lr * lr_min_ratio
    codebook_lr_mult: float  # the codebooks' lr is lr * this
    codebook_init: str  # "encoder" (codes drawn from the first batch's encoder outputs) or "uniform" (+-1/K)
    init_from: str  # "" (from scratch) or a stage-I checkpoint to start from (e.g. imported vqgan_code1024.pth)
    restart_every: int  # move codes unused for this many steps onto batch encoder outputs (0 = never)
    precision: str  # "auto" (bf16 where the CPU/GPU has native bf16, else fp32), "fp32" or "bf16"
    ema_decay: float  # EMA of the generator's weights
    perceptual: str  # "lpips" (VGG, needs its weights), "ssim" (SSIM on luma, training-free) or "none"
    perceptual_weight: float
    gan_start: int  # step at which the adversarial loss switches on
    gan_weight: float  # scale of the adaptive adversarial weight
    gate: str  # which GTs train H: "threshold" (S > S_thr), "strict" (top fraction), "all", "none"
    hflip: bool
    seed: int
    log_every: int
    checkpoint_every: int
    workers: int  # DataLoader worker processes

    def validate(self) -> None:
        _choice("stage1.perceptual", self.perceptual, ("lpips", "ssim", "none"))
        _choice("stage1.gate", self.gate, ("threshold", "strict", "all", "none"))
        _choice("stage1.codebook_init", self.codebook_init, ("encoder", "uniform"))
        _choice("stage1.precision", self.precision, ("auto", "fp32", "bf16"))
        _range("stage1.restart_every", self.restart_every, 0, 100_000_000)
        _range("stage1.steps", self.steps, 1, 100_000_000)
        _range("stage1.batch_size", self.batch_size, 1, 100_000)
        _range("stage1.ema_decay", self.ema_decay, 0.0, 1.0)
        _optimiser("stage1", self.lr, self.betas)
        _range("stage1.lr_min_ratio", self.lr_min_ratio, 0.0, 1.0)
        _range("stage1.codebook_lr_mult", self.codebook_lr_mult, 1e-6, 10_000.0)
        _range("stage1.perceptual_weight", self.perceptual_weight, 0.0, 100.0)
        _range("stage1.gan_start", self.gan_start, 0, 1_000_000_000)
        _range("stage1.gan_weight", self.gan_weight, 0.0, 100.0)
        _range("stage1.workers", self.workers, 0, 256)
        _every("stage1", self.log_every, self.checkpoint_every)


@dataclass(frozen=True)
class TransformerParams:
    """Stage-II Transformer; latent size, emb_dim and codebook size come from stage I."""

    n_layers: int
    n_heads: int
    d_model: int
    d_ff: int
    conditioning: str  # "add" (the paper's), "adaln" (ablation) or "none" (baseline)
    dropout: float
    codebooks: str  # "dual" (C + HQ+ H, the method) or "common" (C only: the single-codebook baseline)
    score_dropout: float  # training: probability that a GT's score bin is replaced by "no score" (needed by guidance)
    guidance: float  # inference: logits = l_none + guidance * (l_S - l_none); 1.0 = the plain conditioned model
    score_trend: bool  # "add" only: learn the embedding as Emb[k] = R[k] + c_k D (a trend shared by the bins; ours)
    patch: int  # tokens per position side: attention over (latent side / patch)^2 positions (ours; 1: the paper's)

    def validate(self) -> None:
        _choice("transformer.conditioning", self.conditioning, ("add", "adaln", "none"))
        _range("transformer.patch", self.patch, 1, 64)
        _choice("transformer.codebooks", self.codebooks, ("dual", "common"))
        for k in ("n_layers", "n_heads", "d_model", "d_ff"):
            _range(f"transformer.{k}", getattr(self, k), 1, 100_000)
        _range("transformer.dropout", self.dropout, 0.0, 0.99)
        _range("transformer.score_dropout", self.score_dropout, 0.0, 0.99)
        _range("transformer.guidance", self.guidance, 0.0, 100.0)
        if self.score_dropout > 0 and self.conditioning == "none":
            raise ConfigError("transformer.score_dropout: an unconditioned model (conditioning: none) has no score to drop; set 0.0")
        if self.guidance != 1.0 and self.score_dropout == 0:
            raise ConfigError("transformer.guidance: guidance needs a model that also learned without a score "
                              "(transformer.score_dropout > 0); set 1.0")
        if self.score_trend and self.conditioning != "add":
            raise ConfigError(f"transformer.score_trend: a trend of the additive embedding needs conditioning add, "
                              f"got {self.conditioning!r}; set false")
        if self.d_model % self.n_heads:
            raise ConfigError("transformer.d_model: must be divisible by transformer.n_heads")


@dataclass(frozen=True)
class Stage2Config:
    """Stage-II training (SPEC 1.4-1.5)."""

    steps: int
    batch_size: int
    lr: float
    betas: list[float]
    ema_decay: float
    feat_weight: float
    quality_weight: float  # lambda_q of the discrete quality loss; 0.0 switches it off
    quality_start: int  # step from which the quality loss is on
    quality_mode: str  # "discrete" (straight-through, the method) or "continuous" (counter-example)
    score_lr_mult: float  # the score embedding's lr is lr * this (it starts at zero and must learn in few steps)
    balance_bins: bool  # draw GTs so that every score bin is seen equally often
    precision: str  # "auto", "fp32" or "bf16" (as stage1.precision)
    seed: int
    log_every: int
    checkpoint_every: int

    def validate(self) -> None:
        _choice("stage2.quality_mode", self.quality_mode, ("discrete", "continuous"))
        _choice("stage2.precision", self.precision, ("auto", "fp32", "bf16"))
        _range("stage2.score_lr_mult", self.score_lr_mult, 0.0, 10_000.0)
        _range("stage2.steps", self.steps, 1, 100_000_000)
        _range("stage2.batch_size", self.batch_size, 1, 100_000)
        _range("stage2.quality_weight", self.quality_weight, 0.0, 100.0)
        _range("stage2.quality_start", self.quality_start, 0, 1_000_000_000)
        _range("stage2.ema_decay", self.ema_decay, 0.0, 1.0)
        _range("stage2.feat_weight", self.feat_weight, 0.0, 100.0)
        _optimiser("stage2", self.lr, self.betas)
        _every("stage2", self.log_every, self.checkpoint_every)


@dataclass(frozen=True)
class EvaluationConfig:
    """Evaluation of the main model, the variants and the inference ablations (SPEC 1.7, 4)."""

    score: float  # S requested at test time (0.95 = bin 9, the top)
    hq_weights: list[float]  # lambda values of the inference ablation (the trained lambda is always shown)
    judges: list[str]  # held-out NR-IQA metrics (pyiqa names): never used for training or conditioning
    judge_size: int  # images smaller than this are bicubic-upsampled for the judges (NIQE needs >= 96 px)
    lpips_net: str  # "alex" or "vgg": LPIPS backbone (its ImageNet weights must be present)
    fid: bool  # FID with the standard Inception (only where its weights are present)
    identity: bool  # identity distance with dlib's face-embedding ResNet (faces >= identity_min_size px)
    identity_min_size: int
    sweep_count: int  # test images restored at each S of the sweep
    grid_count: int  # faces shown in the qualitative grids
    batch_size: int

    def validate(self) -> None:
        _range("evaluation.score", self.score, 0.0, 1.0)
        _choice("evaluation.lpips_net", self.lpips_net, ("alex", "vgg"))
        for lam in self.hq_weights:
            _range("evaluation.hq_weights", lam, 0.0, 10.0)
        _range("evaluation.sweep_count", self.sweep_count, 1, 1_000_000)
        _range("evaluation.grid_count", self.grid_count, 1, 64)
        _range("evaluation.batch_size", self.batch_size, 1, 4096)


@dataclass(frozen=True)
class SeedsConfig:
    """Training-seed variance: the rows the claims compare are trained again with other stage-II seeds
    (DVC stage `train_seed@<row>-<seed>`), and a claim is supported only when every seed supports it."""

    extra: list[int]  # stage-II seeds besides stage2.seed (whose models are the main and variant runs)
    steps: int  # stage-II steps of each extra-seed run (quality_start scales with it)
    rows: list[str]  # "iqpfr" (the main model) and names of `variants`

    def validate(self) -> None:
        _range("seeds.steps", self.steps, 1, 100_000_000)
        if len(set(self.extra)) != len(self.extra):
            raise ConfigError(f"seeds.extra: seeds must be distinct, got {self.extra}")
        if len(set(self.rows)) != len(self.rows):
            raise ConfigError(f"seeds.rows: rows must be distinct, got {self.rows}")


@dataclass(frozen=True)
class QualitySpec:
    """A target true-quality distribution (world.QualityDistribution): near-clean share, peak, tail."""

    clean_fraction: float
    peak: float
    peak_width: float
    tail_fraction: float
    tail_low: float

    def validate(self, key: str) -> None:
        for k in ("clean_fraction", "peak", "peak_width", "tail_fraction", "tail_low"):
            _range(f"{key}.{k}", getattr(self, k), 0.0, 1.0)
        if self.clean_fraction + self.tail_fraction > 1:
            raise ConfigError(f"{key}: clean_fraction + tail_fraction must be <= 1")


# The Jerlov water types that `underwater.JERLOV` tabulates (a test holds the two equal). Validating
# params does not import the underwater module: it loads torch, pandas and scikit-image (1.7 s),
# which a notebook stage's runner, validating before it starts the kernel, never uses.
WATER_TYPES = ("I", "III", "1C", "3C", "5C", "7C")


@dataclass(frozen=True)
class UnderwaterConfig:
    """The underwater enhancement task (notebook 05): its synthetic world, and its overrides of the
    shared sections (its own resolution, set sizes and steps; everything else as for faces)."""

    water_types: list[str]  # Jerlov types drawn per image (WATER_TYPES)
    references: QualitySpec  # true-quality distribution of the training references (UIEB-like)
    num_test: int  # seeded test triplets (raw LQ, reference, clean scene)
    test_seed: int
    baseline: str  # the variant (params `variants`) trained as the unconditioned baseline
    overrides: dict[str, dict]  # section -> {key: value}, sections in TASK_SECTIONS

    def validate(self) -> None:
        bad = [w for w in self.water_types if w not in WATER_TYPES]
        if bad or not self.water_types:
            raise ConfigError(f"underwater.water_types: {bad or 'empty'}; known Jerlov types: {list(WATER_TYPES)}")
        self.references.validate("underwater.references")
        _range("underwater.num_test", self.num_test, 2, 1_000_000)


@dataclass(frozen=True)
class ColourConfig:
    """The colour-enhancement task (notebook 06): GTs with colour flaws, on the face task's stage I,
    and its overrides of the shared sections (never of `vqgan`/`stage1`/`data.resolution`: the
    stage I is the face task's)."""

    gts: QualitySpec  # colour-aware true-quality distribution of the training GTs
    num_test: int  # seeded synthetic test GTs (colour-degraded LQ, and the same LQ in grayscale)
    test_hq_folder: str  # HQ faces to colour-degrade instead (e.g. CelebA-Test); "" = synthetic, with oracles
    test_expected_count: int  # images test_hq_folder must yield (0 = unchecked)
    test_seed: int
    test_gray_prob: float  # grayscale share of the test LQ: fixed apart from training's degrade.gray_prob
    baseline: str  # the variant (params `variants`) trained as the unconditioned baseline
    # colour row ("main" or `baseline`) -> the trained face row it is fine-tuned from ("iqpfr": the face
    # main model; else a face variant); a row not named here starts from stage I
    finetune: dict[str, str]
    overrides: dict[str, dict]  # section -> {key: value}, sections in TASK_SECTIONS["colour"]

    def validate(self) -> None:
        self.gts.validate("colour.gts")
        for row in self.finetune:
            if row not in ("main", self.baseline):
                raise ConfigError(f"colour.finetune.{row}: the colour rows are 'main' and {self.baseline!r}")
        _range("colour.num_test", self.num_test, 2, 1_000_000)
        _range("colour.test_expected_count", self.test_expected_count, 0, 10_000_000)
        _range("colour.test_gray_prob", self.test_gray_prob, 0.0, 1.0)
        if "resolution" in self.overrides.get("data", {}):
            raise ConfigError("colour.overrides.data.resolution: the colour task reads the face task's stage I, "
                              "so it keeps data.resolution")


VARIANT_SECTIONS = ("transformer", "stage2")
"""The sections a variant may override: variants share the data, the prior and stage I."""

TASK_SECTIONS = {
    "underwater": ("data", "iqa", "prior", "scoring", "vqgan", "stage1", "transformer", "stage2", "evaluation"),
    "colour": ("data", "degrade", "iqa", "prior", "scoring", "transformer", "stage2", "evaluation"),
}
"""The shared sections each task other than faces may override (its own sizes, steps, metrics)."""


@dataclass(frozen=True)
class Params:
    """The whole params file."""

    data: DataConfig
    capture: CaptureConfig
    degrade: DegradeConfig
    testset: TestsetConfig
    iqa: IqaConfig
    prior: PriorConfig
    helper: HelperConfig
    scoring: ScoringConfig
    vqgan: VqganParams
    stage1: Stage1Config
    transformer: TransformerParams
    stage2: Stage2Config
    evaluation: EvaluationConfig
    seeds: SeedsConfig
    underwater: UnderwaterConfig
    colour: ColourConfig
    variants: dict[str, dict[str, dict]]  # name -> {section: {key: value}}: overrides of the main model

    def validate(self) -> None:
        for f in fields(self):
            if f.name != "variants":
                getattr(self, f.name).validate()
        for name in self.variants:
            variant(self, name)  # every override must name a real key with a valid value
        for row in self.seeds.rows:
            if row != "iqpfr" and row not in self.variants:
                raise ConfigError(f"seeds.rows: {row!r} is neither 'iqpfr' nor a variant {sorted(self.variants)}")
        if self.stage2.seed in self.seeds.extra:
            raise ConfigError(f"seeds.extra: {self.stage2.seed} is stage2.seed, the main runs' own seed")
        _consistent(self)
        for task in TASK_SECTIONS:
            if getattr(self, task).baseline not in self.variants:
                raise ConfigError(f"{task}.baseline: {getattr(self, task).baseline!r} is not a variant {sorted(self.variants)}")
            _consistent(task_params(self, task), task)  # every override must name a real key with a valid value
        for row, face_row in self.colour.finetune.items():
            if face_row != "iqpfr" and face_row not in self.variants:
                raise ConfigError(f"colour.finetune.{row}: {face_row!r} is neither 'iqpfr' nor a variant {sorted(self.variants)}")

    def to_dict(self) -> dict:
        return asdict(self)


def _choice(key: str, value, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: {value!r} is not one of {list(allowed)}")


def _range(key: str, value, lo, hi) -> None:
    if not lo <= value <= hi:
        raise ConfigError(f"{key}: {value!r} is outside [{lo}, {hi}]")


def _open_range(key: str, value, lo, hi) -> None:
    if not lo < value < hi:
        raise ConfigError(f"{key}: {value!r} is outside ({lo}, {hi}) (both ends excluded)")


def _optimiser(section: str, lr: float, betas: list[float]) -> None:
    if not 0 < lr <= 10:
        raise ConfigError(f"{section}.lr: {lr!r} is outside (0, 10]")
    if len(betas) != 2:
        raise ConfigError(f"{section}.betas: give two values")
    for i, b in enumerate(betas):
        if not 0 <= b < 1:
            raise ConfigError(f"{section}.betas[{i}]: {b!r} is outside [0, 1)")


def _every(section: str, log_every: int, checkpoint_every: int) -> None:
    _range(f"{section}.log_every", log_every, 1, 1_000_000_000)
    _range(f"{section}.checkpoint_every", checkpoint_every, 1, 1_000_000_000)


def _consistent(p: "Params", where: str = "") -> None:
    """Checks across sections, on the params a task's stages will see (`where` names the task)."""
    ctx = f" (in {where})" if where else ""
    factor = 2 ** (len(p.vqgan.ch_mult) - 1)
    if p.data.resolution % factor:
        raise ConfigError(f"data.resolution: {p.data.resolution} is not divisible by {factor}, the downsampling "
                          f"factor of vqgan.ch_mult {p.vqgan.ch_mult}{ctx}")
    latent = p.data.resolution // factor
    if latent % p.transformer.patch:
        raise ConfigError(f"transformer.patch: {p.transformer.patch} does not divide the {latent} x {latent} latent "
                          f"(data.resolution {p.data.resolution} / {factor}){ctx}")
    if p.data.resolution % p.prior.input_pool or p.data.resolution // p.prior.input_pool < 16:
        raise ConfigError(f"prior.input_pool: {p.prior.input_pool} does not divide data.resolution "
                          f"{p.data.resolution} into an image of at least 16 px (the network's four "
                          f"stages halve it three times){ctx}")
    if p.data.source == "synthetic":
        for key, batch in (("stage1.batch_size", p.stage1.batch_size), ("stage2.batch_size", p.stage2.batch_size)):
            if batch > p.data.num_train:
                raise ConfigError(f"{key}: {batch} is larger than the {p.data.num_train} training images "
                                  f"(data.num_train){ctx}; allowed: [1, {p.data.num_train}]")
        if p.prior.batch_size > p.iqa.num_train:
            raise ConfigError(f"prior.batch_size: {p.prior.batch_size} is larger than the {p.iqa.num_train} images of "
                              f"iqa.num_train{ctx}; allowed: [2, {p.iqa.num_train}]")


def _convert(key: str, tp, value):
    """Check `value` against the annotation `tp`, converting ints to floats where a float is due."""
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        return build(tp, value, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(f"{key}[{i}]", item, v) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(f"{key} key", kt, k): _convert(f"{key}.{k}", vt, v) for k, v in value.items()}
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return _convert(key, arg, value)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: {value!r} matches none of {tp}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = " (write floats as 1.0e-4, not 1e-4: YAML 1.1 reads the latter as a string)" \
                if isinstance(value, str) else ""
            raise ConfigError(f"{key}: expected a number, got {type(value).__name__} {value!r}{hint}")
        return float(value)
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is dict and not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
    if tp in (str, bool) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def build(cls, raw: dict, prefix: str = ""):
    """Build dataclass `cls` from a mapping, refusing unknown and missing keys."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix or 'params'}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    for k in raw:
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {names}"
            raise ConfigError(f"{prefix + '.' if prefix else ''}{k}: unknown key{hint}")
    kwargs = {}
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if f.name not in raw:
            if f.default is MISSING and f.default_factory is MISSING:
                raise ConfigError(f"{key}: missing")
            continue
        kwargs[f.name] = _convert(key, hints[f.name], raw[f.name])
    return cls(**kwargs)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file (the default profile lives in `params.yaml`)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such params file")
    with open(path) as fh:
        raw = yaml.safe_load(fh)
    params = build(Params, raw)
    params.validate()
    return params


def _override(params: Params, overrides: dict, allowed: tuple[str, ...], prefix: str, who: str) -> Params:
    """`params` with sections replaced by their overrides, rebuilt and validated (errors name the
    key, e.g. `variants.baseline.stage2.quality_wieght: unknown key`)."""
    updates = {}
    for sec, values in overrides.items():
        key = f"{prefix}.{sec}"
        if sec not in allowed:
            raise ConfigError(f"{key}: {who} may override only {list(allowed)}")
        try:
            updates[sec] = override_section(getattr(params, sec), values, key)
        except ConfigError as err:
            raise ConfigError(f"{prefix}: {err}" if not str(err).startswith(key) else str(err)) from None
    return replace(params, **updates)


def override_section(base, values: dict, key: str):
    """A section dataclass with some keys replaced, rebuilt and validated (errors name `key`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{key}: expected a mapping of keys to values")
    new = build(type(base), {**asdict(base), **values}, key)
    new.validate()
    return new


def variant(params: Params, name: str) -> Params:
    """The params of variant `name`: the main model's with the variant's overrides applied and
    validated (errors name the key, e.g. `variants.baseline.stage2.quality_wieght: unknown key`)."""
    if name not in params.variants:
        raise ConfigError(f"variants.{name}: no such variant; known: {sorted(params.variants)}")
    if name in ("main", "iqpfr") or not name.isidentifier():
        raise ConfigError(f"variants.{name}: a variant name must be an identifier other than 'main' and 'iqpfr'")
    return _override(params, params.variants[name], VARIANT_SECTIONS, f"variants.{name}", "a variant")


def guidance_by_row(transformer: TransformerParams, variants: dict) -> dict[str, float]:
    """transformer.guidance of the main model ("iqpfr") and of every variant (its own overrides applied)."""
    out = {"iqpfr": transformer.guidance}
    for name, overrides in variants.items():
        section = overrides.get("transformer", {})
        out[name] = override_section(transformer, section, f"variants.{name}.transformer").guidance if section else transformer.guidance
    return out


TASKS = ("face", *TASK_SECTIONS)


def task_params(params: Params, task: str) -> Params:
    """The params a task's shared stages read: faces use the file as written; another task applies
    its section's `overrides` (e.g. `underwater.overrides.data.resolution`)."""
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: known tasks are {list(TASKS)}")
    if task == "face":
        return params
    return _override(params, getattr(params, task).overrides, TASK_SECTIONS[task], f"{task}.overrides", f"the {task} task")


def section(params: Params, name: str):
    """One named section of the params (raises ConfigError for an unknown name)."""
    if name not in {f.name for f in fields(Params)}:
        raise ConfigError(f"{name}: unknown params section")
    return getattr(params, name)


SECTIONS = tuple(f.name for f in fields(Params))
