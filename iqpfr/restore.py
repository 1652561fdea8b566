"""Restoring your own photos: aligned faces or whole photographs, as arrays or files.

- Aligned mode: each image is a face already aligned like the training faces; it is resized to
  the model's resolution, restored at the requested quality S, and resized back (times `upscale`).
- Whole-image mode: faces are found with dlib's HOG frontal-face detector (`detector="dlib"`,
  the default; it also finds faces turned in-plane by up to about 30 degrees) or OpenCV's bundled
  Haar cascade (`"haar"`: upright faces only). Each face is aligned by a similarity transform
  (rotation, scale, shift) that puts its eye centres, from dlib's 5-point landmark model shipped
  by `face-recognition-models`, on the training template's (`align="landmarks"`), or by a
  scale-and-shift of the detected box (`align="box"`, no rotation); restored; and pasted back
  through a feathered elliptical mask so no seam shows. Faces smaller than `min_face` pixels, or
  whose landmarks are implausible for their box, are reported and left untouched. Both detectors
  are classical: profile faces, strong occlusion and faces under ~40 px are often missed.

A trained restorer is two checkpoints (stage II on its stage I); `export_bundle` writes both
into one self-describing file (format `iqpfr.restorer/4`) that `load_model` reads on its own.

Inputs are never overwritten; unreadable or unusable files are skipped with a reason, and the
summary says what happened to every input.
"""
from __future__ import annotations

import glob
import os
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from . import atomic, safeload
from .data import IMAGE_SUFFIXES, ImageRejected, read_image, sha256_file, write_png
from .precision import CPU_BF16_FLAGS
from .synthfaces import TEMPLATE_5PT

# Where the detected face box lands in the aligned template (unit coordinates): its centre and width.
BOX_CENTRE = (0.5, 0.56)
BOX_WIDTH = 0.56


BUNDLE_FORMAT = "iqpfr.restorer/4"  # /2: CodeFormer-aligned VQGAN layers; /3: tensor_sha256; /4: CodeFormer-aligned ends and heads, fusion blocks


def default_guidance(model, params_file: str | Path = "params.yaml", task: str = "face") -> tuple[float, str]:
    """The score guidance w a model restores with when none is asked for, and where it comes from:
    1.0 for a model without a "no score" bin; else the `transformer.guidance` of `task` in
    `params_file` (the w the pipeline evaluates its models at), or 1.0 where that file is absent."""
    if not model.cfg.null_bin:
        return 1.0, "the model has no 'no score' bin"
    if not Path(params_file).exists():
        return 1.0, f"no {params_file} here"
    from .config import load_params, task_params

    return float(task_params(load_params(params_file), task).transformer.guidance), f"{params_file} transformer.guidance"


def export_bundle(stage2_path: str | Path, stage1_path: str | Path, out: str | Path, guidance: float | None = None,
                  params_file: str | Path = "params.yaml") -> dict:
    """Write the trained restorer (EMA weights) and its stage-I model into one file; returns its
    provenance. The bundle records the guidance w it restores with by default: `guidance`, or with
    None the params' (`default_guidance`)."""
    from dataclasses import asdict

    from .conditioned import load_restorer

    model, info = load_restorer(stage2_path, stage1_path)
    w = default_guidance(model, params_file)[0] if guidance is None else float(guidance)
    if w != 1.0 and not model.cfg.null_bin:
        raise ValueError(f"{stage2_path} was trained without score dropout (no 'no score' bin): guidance {w} is not possible")
    bundle = {"format": BUNDLE_FORMAT, "config": asdict(model.cfg), "stage1_config": asdict(model.stage1.cfg),
              "stage1": model.stage1.state_dict(), "restorer": restorer_state(model), "guidance": w,
              "provenance": {"stage2": str(stage2_path), "stage2_sha256": sha256_file(stage2_path),
                             "stage1": str(stage1_path), "stage1_sha256": sha256_file(stage1_path),
                             "stage2_step": info["step"], "train_config": info["train_config"], "guidance": w}}
    bundle["tensor_sha256"] = safeload.tensor_digest(bundle)  # a re-saved, edited bundle no longer matches
    atomic.save_torch(bundle, out)
    return bundle["provenance"]


def restorer_state(model) -> dict:
    """The bundle's `restorer` entry: the state dicts of the stage-II encoder, the Transformer and,
    where the model has them, the fidelity fusion blocks."""
    state = {"encoder": model.encoder.state_dict(), "transformer": model.transformer.state_dict()}
    if model.fidelity is not None:
        state["fidelity"] = model.fidelity.state_dict()
    return state


def load_model(checkpoint: str | Path, stage1: str | Path | None = None):
    """A frozen restorer from a bundle (`stage1` must be None) or from a stage-II checkpoint on
    its stage-I checkpoint (`stage1`, default models/stage1/vqgan.pt), restoring by default with
    the guidance its bundle records (1.0 where it records none). Errors are ValueError or
    FileNotFoundError with the file named."""
    return load_model_and_guidance(checkpoint, stage1)[0]


def load_model_and_guidance(checkpoint: str | Path, stage1: str | Path | None = None) -> tuple[torch.nn.Module, float | None]:
    """`load_model`, and the guidance w the file records (bundles from `iqpfr export`), or None
    (stage-II checkpoints, older bundles, imported weights)."""
    from .codebook import STAGE1
    from .conditioned import load_restorer
    from .train import load_checkpoint
    from .transformer import QualityRestorer, TransformerConfig
    from .vqgan import DualCodebookVQGAN, VQGANConfig

    try:
        b = load_checkpoint(checkpoint, BUNDLE_FORMAT)
    except ValueError as err:
        if "is not an" not in str(err):  # unreadable file: say so
            raise
        return load_restorer(checkpoint, stage1 or STAGE1)[0], None
    if stage1 is not None:
        raise ValueError(f"{checkpoint} is a bundle that carries its own stage I: do not pass a stage-I checkpoint")
    digest = b.pop("tensor_sha256", None)
    if digest != safeload.tensor_digest(b):
        raise ValueError(f"{checkpoint}: the bundle's contents do not match its tensor_sha256 (edited or damaged): refused")
    try:
        s1 = DualCodebookVQGAN(VQGANConfig(**b["stage1_config"]))
        s1.load_state_dict(b["stage1"], strict=True)
        model = QualityRestorer(s1, TransformerConfig(**b["config"]))
        model.encoder.load_state_dict(b["restorer"]["encoder"], strict=True)
        model.transformer.load_state_dict(b["restorer"]["transformer"], strict=True)
        if model.fidelity is not None or "fidelity" in b["restorer"]:
            model.fidelity.load_state_dict(b["restorer"]["fidelity"], strict=True)
    except (KeyError, TypeError, RuntimeError, AttributeError) as err:  # a damaged or hand-edited bundle
        raise ValueError(f"{checkpoint}: the bundle's weights do not match its config ({type(err).__name__}: "
                         f"{str(err).splitlines()[0]})") from None
    recorded = b.get("guidance")
    if recorded is not None:
        if recorded != 1.0 and not model.cfg.null_bin:
            raise ValueError(f"{checkpoint}: records guidance {recorded} for a model without a 'no score' bin: refused")
        model.guidance = float(recorded)
    return model.eval().requires_grad_(False), recorded


@dataclass(frozen=True)
class RestoreOptions:
    score: float = 0.95
    hq_weight: float | None = None  # None: the lambda stage I was trained with
    fidelity: float = 0.0  # CodeFormer's w: only models with fusion blocks (imported) accept w > 0
    guidance: float | None = None  # classifier-free guidance of the score (None: the model's own, `load_model`);
    # only models trained with score dropout accept != 1
    adain: bool = True  # AdaIN of the codes to the input's latent statistics (task.Task.adain: off for colour)
    aligned: bool = True
    upscale: int = 1
    batch_size: int = 8
    device: str = "auto"  # auto | cpu | cuda | mps
    precision: str = "fp32"  # fp32 | bf16 | fp16 (fp16 on CUDA only)
    suffix: str = ""
    save_comparison: bool = False
    min_face: int = 24  # whole-image mode: smaller detections are reported and skipped
    max_pixels: int = 40_000_000  # larger inputs are skipped with a reason (memory)
    feather: float = 0.08  # feathering width as a fraction of the face size
    detector: str = "dlib"  # whole-image mode: "dlib" (HOG) or "haar" (OpenCV)
    align: str = "landmarks"  # whole-image mode: "landmarks" (5-point, with rotation) or "box"
    tiled: bool = False  # enhancement tasks (underwater): whole images in overlapping model-size tiles


@dataclass
class Summary:
    restored: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    notes: list[tuple[str, str]] = field(default_factory=list)  # per-file remarks (faces skipped, ...)

    @property
    def exit_code(self) -> int:
        return 1 if self.skipped else 0


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA, then MPS, then CPU; an explicitly requested device must exist."""
    has_mps = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if has_mps else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    if name == "mps" and not has_mps:
        raise ValueError("--device mps: no MPS device is available")
    if name not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


def precision_context(model, device: torch.device, precision: str):
    """The context `model.restore` runs in at `precision`: fp32 as is; bf16 (CPU/CUDA) or fp16
    (CUDA only) in the convolutional networks alone (see `convolutions_in`)."""
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16" and device.type in ("cpu", "cuda"):
        return convolutions_in(model, device, torch.bfloat16)
    if precision == "fp16" and device.type == "cuda":
        return convolutions_in(model, device, torch.float16)
    raise ValueError(f"--precision {precision} is not supported on {device.type}")


@contextmanager
def convolutions_in(model, device: torch.device, dtype: torch.dtype):
    """Run the restorer's encoder (with the features it hands the fusion blocks) and the stage-I
    generator (with the fusion blocks inside it) under autocast to `dtype`, handing their outputs on
    in fp32; the Transformer, the code lookup and AdaIN stay in fp32.

    Why not autocast the whole model: the Transformer picks each code by an argmax over logits that
    score guidance scales by w, and its bf16 rounding flips the close calls. On the trained default
    model (100 test faces, guidance 3; `python -m benchmarks --only default_restore`) whole-model
    bf16 changed 5.0% of the codes, the Transformer alone in bf16 4.9%, the encoder alone 0.95%, the
    generator alone none; the Transformer is under 2% of the time at 512 px. Inside the context the
    networks' methods are wrapped on the instances; leaving it puts back whatever was there."""
    methods = [(model.encoder, "forward"), (model.encoder, "forward_with_features"),
               (model.stage1.generator, "forward")]
    saved = [vars(net).get(name) for net, name in methods]

    def lowered(method):
        def run(*args, **kwargs):
            with torch.autocast(device.type, dtype):
                return _to_fp32(method(*args, **kwargs))
        return run

    for net, name in methods:
        setattr(net, name, lowered(getattr(net, name)))
    try:
        yield
    finally:
        for (net, name), method in zip(methods, saved):
            if method is None:
                delattr(net, name)  # the class's own method again
            else:
                setattr(net, name, method)


def bf16_warning(device: torch.device, precision: str, flags: set[str]) -> str | None:
    """A warning when bf16 is asked for on a CPU whose `flags` show no native bf16, else None."""
    if precision != "bf16" or device.type != "cpu" or flags & set(NATIVE_BF16_FLAGS):
        return None
    return ("this CPU reports no native bf16 instructions (avx512_bf16, amx_bf16): bf16 is emulated "
            "and much slower than fp32 here (6-50x on an AVX2 CPU measured); --precision fp32 is faster")


def _to_fp32(out):
    """A tensor, or the tensors inside a tuple or dict, as fp32."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, tuple):
        return tuple(_to_fp32(o) for o in out)
    if isinstance(out, dict):
        return {k: _to_fp32(v) for k, v in out.items()}
    return out


def list_inputs(spec: str) -> list[Path]:
    """An image file, a folder (recursively) or a glob pattern -> sorted files."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():  # broken and looping symbolic links are kept so that they are reported, not lost
        return sorted(f for f in p.rglob("*") if (f.is_file() or f.is_symlink()) and not f.name.startswith("."))
    hits = sorted(Path(h) for h in glob.glob(spec, recursive=True) if Path(h).is_file())
    if not hits:
        raise FileNotFoundError(f"no input matches {spec!r}")
    return hits


@torch.no_grad()
def restore_faces(model, faces: list[np.ndarray], opts: RestoreOptions, device: torch.device) -> list[np.ndarray]:
    """Restore aligned faces (each (h, w, 3) float in [0,1], any size) -> restored at size*upscale."""
    r = model.cfg.latent_size * model.stage1.cfg.downsample_factor
    out = []
    for i in range(0, len(faces), opts.batch_size):
        chunk = faces[i:i + opts.batch_size]
        x = torch.stack([torch.from_numpy(cv2.resize(f, (r, r), interpolation=cv2.INTER_AREA if f.shape[0] > r
                                                     else cv2.INTER_CUBIC)).permute(2, 0, 1) for f in chunk])
        x = x.clamp(0, 1).to(device, memory_format=INFERENCE_MEMORY_FORMAT)
        with precision_context(model, device, opts.precision):
            y = model.restore(x, opts.score, opts.hq_weight, use_adain=opts.adain, fidelity=opts.fidelity,
                              guidance=opts.guidance).float().cpu()
        for f, img in zip(chunk, y):
            h, w = f.shape[0] * opts.upscale, f.shape[1] * opts.upscale
            out.append(np.clip(cv2.resize(img.permute(1, 2, 0).numpy(), (w, h), interpolation=cv2.INTER_CUBIC), 0, 1))
    return out


# `--precision auto` for inference follows the training rule: bf16 only on CUDA with bf16 and on
# CPUs with AMX. Two 2-core CPUs this project ran on report the same flags (AVX512-bf16, no AMX) and
# disagree (`python -m benchmarks`): on an Intel Xeon whole-model bf16 ran at 0.80x fp32 at 512 px, on
# an AMD EPYC `--precision bf16` (convolutions only) at 2.5x. Flags cannot tell them apart, so auto
# keeps fp32 on both and bf16 stays the user's choice there.
INFERENCE_BF16_FLAGS = CPU_BF16_FLAGS
# CPU flags of native bf16 arithmetic; without either, bf16 is emulated (6-50x slower than fp32 on
# the AVX2-only AMD EPYC, reports/metrics/bench_avx2.json).
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# channels_last (NHWC) for inference: 1.06-1.34x faster on the default model and 1.21-1.27x at
# 512 px on the 2-core CPUs measured, same codes, outputs within 1e-4 (the same benchmark).
INFERENCE_MEMORY_FORMAT = torch.channels_last
# dlib HOG detections scoring below this are dropped (on skimage's astronaut the face scores 1.16,
# a false detection on the suit's flag 0.12; the project's synthetic faces 0.3-1.0).
DLIB_MIN_SCORE = 0.3
DLIB_UPSAMPLE_MAX_PIXELS = 4_000_000


def detect_faces(img: np.ndarray, detector: str = "dlib") -> list[tuple[int, int, int, int]]:
    """Face boxes (x, y, w, h) in an (H, W, 3) image in [0,1]: dlib's HOG detector (score >=
    DLIB_MIN_SCORE; images up to DLIB_UPSAMPLE_MAX_PIXELS get one 2x upsampling pass, so faces from
    about 40 px, larger ones none, so faces from about 80 px: upsampling a 24-megapixel photo would
    cost gigabytes) or OpenCV's frontal Haar cascade."""
    u8 = np.ascontiguousarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
    if detector == "dlib":
        upsample = 1 if img.shape[0] * img.shape[1] <= DLIB_UPSAMPLE_MAX_PIXELS else 0
        rects, scores, _ = _dlib_models()[0].run(u8, upsample, 0.0)
        return [(r.left(), r.top(), r.width(), r.height()) for r, s in zip(rects, scores) if s >= DLIB_MIN_SCORE]
    if detector != "haar":
        raise ValueError(f"unknown detector {detector!r}; use dlib or haar")
    cascade = cv2.CascadeClassifier(str(Path(cv2.data.haarcascades) / "haarcascade_frontalface_default.xml"))
    if cascade.empty():
        raise RuntimeError("OpenCV's Haar cascade could not be loaded (opencv-python<5 ships it)")
    boxes = cascade.detectMultiScale(cv2.cvtColor(u8, cv2.COLOR_RGB2GRAY), scaleFactor=1.1, minNeighbors=5,
                                     minSize=(16, 16))
    return [tuple(int(v) for v in b) for b in boxes]


def face_models():
    """The `face_recognition_models` package (its import warns that pkg_resources is deprecated:
    a packaging detail of that package, silenced here)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
        import face_recognition_models
    return face_recognition_models


@lru_cache(maxsize=1)
def _dlib_models():
    """dlib's HOG face detector and the 5-point landmark model of `face-recognition-models`."""
    import dlib

    frm = face_models()

    return dlib.get_frontal_face_detector(), dlib.shape_predictor(frm.pose_predictor_five_point_model_location())


def eye_centres(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """(2, 2) eye centres (x, y), image-left first, from dlib's 5-point model run in `box`.
    The model marks two corners per eye (points 0-1 and 2-3) and the base of the nose (4)."""
    import dlib

    x, y, w, h = box
    # the box with a margin of one box size around it, so a large photo is never converted whole per face
    x0, y0 = max(x - w, 0), max(y - h, 0)
    region = img[y0:y + 2 * h, x0:x + 2 * w]
    u8 = np.ascontiguousarray(np.clip(np.rint(region * 255), 0, 255).astype(np.uint8))
    shape = _dlib_models()[1](u8, dlib.rectangle(x - x0, y - y0, x - x0 + w - 1, y - y0 + h - 1))
    pts = np.array([[p.x + x0, p.y + y0] for p in shape.parts()], np.float64)
    eyes = np.stack([pts[0:2].mean(0), pts[2:4].mean(0)])
    return eyes[np.argsort(eyes[:, 0])]


def eyes_to_template(eyes: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity mapping image pixels into a size x size aligned crop so that the two eye
    centres (image-left first) land on the template's (synthfaces.TEMPLATE_5PT)."""
    src, dst = eyes, TEMPLATE_5PT[:2] * size
    d_src, d_dst = src[1] - src[0], dst[1] - dst[0]
    scale = np.linalg.norm(d_dst) / np.linalg.norm(d_src)
    angle = np.arctan2(d_dst[1], d_dst[0]) - np.arctan2(d_src[1], d_src[0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre_src, centre_dst = src.mean(0), dst.mean(0)
    return np.c_[rot, centre_dst - rot @ centre_src]


def plausible_eyes(eyes: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    """Eye centres inside the box, 20-80% of its width apart, the eye line within 45 degrees."""
    x, y, w, h = box
    d = eyes[1] - eyes[0]
    inside = bool(np.all((eyes[:, 0] >= x) & (eyes[:, 0] <= x + w) & (eyes[:, 1] >= y) & (eyes[:, 1] <= y + h)))
    return inside and 0.2 * w <= np.hypot(*d) <= 0.8 * w and abs(np.degrees(np.arctan2(d[1], d[0]))) <= 45


def box_to_template(box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """2x3 affine (scale + shift) mapping image pixels into a size x size aligned crop."""
    x, y, w, h = box
    s = BOX_WIDTH * size / w
    cx, cy = x + w / 2, y + h / 2
    return np.array([[s, 0, BOX_CENTRE[0] * size - s * cx], [0, s, BOX_CENTRE[1] * size - s * cy]], np.float64)


def alignments(img: np.ndarray, opts: RestoreOptions, size: int) -> tuple[list[np.ndarray], list[str]]:
    """Detect faces and align each to the template: (2x3 transforms into a size x size crop, notes)."""
    boxes = detect_faces(img, opts.detector)
    notes, transforms = [], []
    if not boxes:
        notes.append("no face found: image left untouched")
    for b in boxes:
        if b[2] < opts.min_face:
            notes.append(f"face at {b} is smaller than {opts.min_face} px: left untouched")
        elif opts.align == "box":
            transforms.append(box_to_template(b, size))
        elif plausible_eyes(eyes := eye_centres(img, b), b):
            transforms.append(eyes_to_template(eyes, size))
        else:
            notes.append(f"face at {b}: landmarks implausible for the box: left untouched")
    return transforms, notes


# The face region of the aligned template pasted back (an ellipse, unit coordinates): only the
# face is replaced, the hair and background of the photograph stay.
FACE_CENTRE, FACE_AXES = (0.5, 0.55), (0.27, 0.34)


def face_mask(n: int, feather: float) -> np.ndarray:
    """(n, n) float32 in [0,1]: the feathered elliptical face region of an aligned n x n crop."""
    k = max(1, int(feather * n))
    mask = np.zeros((n, n), np.float32)
    centre = (int(FACE_CENTRE[0] * n), int(FACE_CENTRE[1] * n))
    axes = (int(FACE_AXES[0] * n) - k, int(FACE_AXES[1] * n) - k)
    cv2.ellipse(mask, centre, axes, 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), k / 2)


def paste_back(img: np.ndarray, face: np.ndarray, M: np.ndarray, feather: float) -> np.ndarray:
    """Warp an aligned restored face (n, n, 3) back into img (H, W, 3) through a feathered
    elliptical face mask, **in place**, and return img. Only the crop's bounding box is touched
    and only that much memory is used, whatever the photo's size."""
    h, w = img.shape[:2]
    n = face.shape[0]
    inv = cv2.invertAffineTransform(M)
    corners = np.array([[0, 0, 1], [n, 0, 1], [0, n, 1], [n, n, 1]], np.float64) @ inv.T
    x0, y0 = (np.floor(corners.min(0)).astype(int) - 2).clip(0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, (w, h))
    if x1 <= x0 or y1 <= y0:
        return img
    shifted = inv.copy()
    shifted[:, 2] -= (x0, y0)  # the same mapping into the box's own pixel grid
    size = (int(x1 - x0), int(y1 - y0))
    back = cv2.warpAffine(face, shifted, size, flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.warpAffine(face_mask(n, feather), shifted, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    roi = img[y0:y1, x0:x1]
    roi[...] = np.clip(roi * (1 - mask) + back * mask, 0, 1)
    return img


def restore_whole(model, img: np.ndarray, opts: RestoreOptions, device: torch.device) -> tuple[np.ndarray, list[str]]:
    """Detect, align, restore and paste back every usable face of an image; returns (image, notes)."""
    r = model.cfg.latent_size * model.stage1.cfg.downsample_factor
    crop = max(r, 256)
    Ms, notes = alignments(img, opts, crop)
    faces = [cv2.warpAffine(img, M, (crop, crop), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT) for M in Ms]
    out = img.copy()  # one copy of the photo; faces are pasted into it box by box
    for M, face in zip(Ms, restore_faces(model, faces, RestoreOptions(**{**opts.__dict__, "upscale": 1}), device)):
        paste_back(out, face, M, opts.feather)
    if opts.upscale > 1:
        out = cv2.resize(out, (img.shape[1] * opts.upscale, img.shape[0] * opts.upscale), interpolation=cv2.INTER_CUBIC)
    notes.append(f"{len(Ms)} face(s) restored")
    return out, notes


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` pixels
    shared by neighbours; the last tile ends at `length` (length >= tile)."""
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    return starts + [length - tile]


@torch.no_grad()
def enhance_tiled(model, img: np.ndarray, opts: RestoreOptions, device: torch.device) -> np.ndarray:
    """Enhance a whole image of any size at native scale (enhancement tasks such as underwater):
    overlapping tiles of the model's resolution R (overlap R/4), each restored at the requested S,
    blended with a Hann-shaped weight so that no seam shows. Images smaller than R on a side are
    padded by reflection to R and cropped back. (H, W, 3) in [0,1] -> (H*upscale, W*upscale, 3)."""
    r = model.cfg.latent_size * model.stage1.cfg.downsample_factor
    h, w = img.shape[:2]
    ph, pw = max(0, r - h), max(0, r - w)
    x = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="reflect") if ph or pw else img
    H, W = x.shape[:2]
    win = np.hanning(r + 2)[1:-1]
    weight = np.outer(win, win)[..., None].astype(np.float32) + 1e-3
    boxes = [(y, x0) for y in tile_starts(H, r, r // 4) for x0 in tile_starts(W, r, r // 4)]
    acc, norm = np.zeros_like(x), np.zeros((H, W, 1), np.float32)
    for i in range(0, len(boxes), opts.batch_size):
        chunk = boxes[i:i + opts.batch_size]
        t = torch.stack([torch.from_numpy(np.ascontiguousarray(x[y:y + r, x0:x0 + r])).permute(2, 0, 1) for y, x0 in chunk])
        with precision_context(model, device, opts.precision):
            out = model.restore(t.to(device, memory_format=INFERENCE_MEMORY_FORMAT), opts.score,
                                opts.hq_weight, use_adain=opts.adain,
                                guidance=opts.guidance).float().cpu().permute(0, 2, 3, 1).numpy()
        for (y, x0), o in zip(chunk, out):
            acc[y:y + r, x0:x0 + r] += o * weight
            norm[y:y + r, x0:x0 + r] += weight
    res = (acc / norm)[:h, :w]
    if opts.upscale > 1:
        res = cv2.resize(res, (w * opts.upscale, h * opts.upscale), interpolation=cv2.INTER_CUBIC)
    return np.clip(res, 0, 1)


def _load(p: Path, opts: RestoreOptions, summary: Summary) -> np.ndarray | None:
    """One input decoded, or None with the reason recorded in the summary."""
    try:
        img, conversions = read_image(p)
    except ImageRejected as err:
        summary.skipped.append((str(p), str(err)))
        return None
    if img.shape[0] * img.shape[1] > opts.max_pixels:
        summary.skipped.append((str(p), f"{img.shape[1]}x{img.shape[0]} is larger than {opts.max_pixels} pixels"))
        return None
    if conversions:
        summary.notes.append((str(p), "; ".join(conversions)))
    return img


def _input_folder(inputs: list[Path]) -> Path:
    """The folder that holds all the inputs (absolute; a symlink loop is never resolved)."""
    return Path(os.path.commonpath([os.path.abspath(p.parent) for p in inputs]))


def output_paths(inputs: list[Path], out_dir: Path, suffix: str = "") -> list[Path]:
    """Each input's output file: its path relative to the folder that holds all the inputs, under
    out_dir, as `<stem><suffix>.png`. A folder's tree is mirrored, so hq/000.png and lq/000.png
    stay apart; the inputs of one folder land directly in out_dir."""
    if not inputs:
        return []
    base = _input_folder(inputs)
    return [out_dir / Path(os.path.abspath(p.parent)).relative_to(base) / f"{p.stem}{suffix}.png" for p in inputs]


def earlier_results(inputs: list[Path], out_dir: Path) -> list[Path]:
    """The inputs inside out_dir when out_dir lies below the inputs' folder (`restore faces/ -o
    faces/restored`, run again): a folder's earlier results, not inputs. An output folder that is
    the inputs' folder itself (restoring in place with --suffix) holds none."""
    if not inputs:
        return []
    out = Path(os.path.abspath(out_dir))
    if _input_folder(inputs) not in out.parents:  # out_dir is the inputs' folder, or elsewhere
        return []
    return [p for p in inputs if out in Path(os.path.abspath(p)).parents]


def _not_square(img: np.ndarray) -> str:
    """A note for an aligned input (h, w, 3) that is not square: `restore_faces` stretches it to the
    model's square and back, which an aligned face never needs ("" when it is square)."""
    h, w = img.shape[:2]
    if h == w:
        return ""
    return (f"not square ({w} x {h}): restored as an aligned face, stretched to the model's square and back; "
            "for a photo, leave out --aligned")


def run(inputs: list[Path], out_dir: Path, model, opts: RestoreOptions, device: torch.device) -> Summary:
    """Restore files into out_dir (PNG; a folder's tree mirrored: `output_paths`); never overwrites
    an input or another input's result; returns the summary. Inputs are decoded a batch at a time
    (aligned faces) or one at a time (photos, tiled images), so memory does not grow with the
    number of inputs."""
    summary = Summary()
    if earlier := set(earlier_results(inputs, out_dir)):  # before `protected`: they are results to replace
        inputs = [p for p in inputs if p not in earlier]
        note = f"{len(earlier)} file(s) inside the output folder left out: earlier results, not inputs"
        summary.notes.append((str(out_dir), note))
    out_dir.mkdir(parents=True, exist_ok=True)
    protected = {Path(os.path.realpath(p)) for p in inputs}  # realpath: never raises on a symlink loop
    todo: list[tuple[Path, Path]] = []
    claimed: dict[Path, Path] = {}  # output -> the input that writes it
    for p, target in zip(inputs, output_paths(inputs, out_dir, opts.suffix)):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            summary.skipped.append((str(p), f"not an image file type ({p.suffix or 'no suffix'})"))
        elif Path(os.path.realpath(target)) in protected:
            summary.skipped.append((str(p), f"output {target} would overwrite an input; use another -o or --suffix"))
        elif target in claimed:
            why = f"output {target} is already {claimed[target]}'s; rename one of the two or restore them apart"
            summary.skipped.append((str(p), why))
        else:
            claimed[target] = p
            todo.append((p, target))
    step = opts.batch_size if opts.aligned and not opts.tiled else 1
    for start in tqdm(range(0, len(todo), step), desc="restore", unit="batch" if step > 1 else "image"):
        chunk = [(p, img, target) for p, target in todo[start:start + step]
                 if (img := _load(p, opts, summary)) is not None]
        if not chunk:
            continue
        if opts.tiled:
            results = [enhance_tiled(model, img, opts, device) for _, img, _ in chunk]
        elif opts.aligned:
            results = restore_faces(model, [img for _, img, _ in chunk], opts, device)
            summary.notes += [(str(p), n) for p, img, _ in chunk if (n := _not_square(img))]
        else:
            results = []
            for p, img, _ in chunk:
                res, notes = restore_whole(model, img, opts, device)
                results.append(res)
                summary.notes += [(str(p), n) for n in notes]
        for (p, img, target), res in zip(chunk, results):
            write_png(target, res)
            if opts.save_comparison:
                before = cv2.resize(img, (res.shape[1], res.shape[0]), interpolation=cv2.INTER_NEAREST)
                write_png(target.with_name(f"{target.stem}_comparison.png"), np.concatenate([before, res], 1))
            summary.restored.append(str(p))
    return summary
