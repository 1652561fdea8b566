"""What a task is, in one place: where its files live, how its truth is measured and where its
LQ inputs come from. The shared stages (scoring, stage I, latent targets, stage II, the S sweep)
take a `Task` and never ask which one it is.

    face        the first task: data/, models/, reports/metrics/ (the layout the pipeline always
                had); true quality = luma SSIM; LQ made on the fly by `degrade` from the GT.
    underwater  data/underwater/, models/underwater/, reports/metrics/underwater/; true quality =
                the colour-aware one (luma SSIM x CIEDE2000 term); LQ = the raw underwater image
                stored beside each reference (`raw_file`), as in UIEB's raw/reference pairs.
    colour      data/colour/, models/colour/, reports/metrics/colour/; colour-aware true quality;
                LQ made on the fly (face degradations + colour jitter + grayscale); no stage I of
                its own: it reads the face task's (`shared_stage1`), as the authors' colour
                enhancement reuses the restoration codebook. Restores without AdaIN (`adain`).

A task's settings are the params file with its `overrides` applied (`config.task_params`); its
world is built by its own module (`world`/`data` for faces, `underwater` for underwater).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import truequality


@dataclass(frozen=True)
class Task:
    name: str
    data: Path  # root of world/, iqa/, testset/, scores/, targets/
    models: Path  # root of prior/, stage1/, stage2/, variants/, seeds/
    metrics: Path  # where the stages' metrics JSON/CSV files go
    quality: str  # key of truequality.DEFINITIONS
    paired_lq: bool  # True: the LQ of training GT i is stored beside it (column raw_file)
    whole_images: bool  # True: `iqpfr restore` enhances whole images in tiles (else: aligned faces)
    shared_stage1: Path | None = None  # another task's stage-I checkpoint, read (never trained) by this one
    # Inference: AdaIN of the predicted codes to the LQ latent's channel statistics (CodeFormer's
    # default, kept for faces and underwater). Those statistics carry the input's global colour, so
    # for colour enhancement AdaIN hands the cast (or the gray) of the input back to the output:
    # measured by benchmarks/colour_design.py (notebook 06), the colour task restores without it.
    adain: bool = True

    @property
    def world(self) -> Path:
        return self.data / "world"

    @property
    def iqa(self) -> Path:
        return self.data / "iqa"

    @property
    def testset(self) -> Path:
        return self.data / "testset"

    @property
    def scores(self) -> Path:
        return self.data / "scores"

    @property
    def targets(self) -> Path:
        return self.data / "targets" / "targets.pt"

    @property
    def prior(self) -> Path:
        return self.models / "prior" / "iqanet.pt"

    @property
    def stage1(self) -> Path:
        return self.shared_stage1 or self.models / "stage1" / "vqgan.pt"

    @property
    def stage2(self) -> Path:
        return self.models / "stage2" / "restorer.pt"

    @property
    def variants(self) -> Path:
        return self.models / "variants"

    def true_quality(self, x: torch.Tensor, clean: torch.Tensor) -> np.ndarray:
        """True quality of images (N, 3, R, R) in [0,1] against their clean images -> (N,) in [0, 1]."""
        return truequality.per_image(truequality.DEFINITIONS[self.quality], x, clean)


FACE = Task("face", Path("data"), Path("models"), Path("reports/metrics"), "luma", paired_lq=False,
            whole_images=False)
UNDERWATER = Task("underwater", Path("data/underwater"), Path("models/underwater"), Path("reports/metrics/underwater"),
                  "colour", paired_lq=True, whole_images=True)
COLOUR = Task("colour", Path("data/colour"), Path("models/colour"), Path("reports/metrics/colour"), "colour",
              paired_lq=False, whole_images=False, shared_stage1=FACE.stage1, adain=False)
TASKS = {t.name: t for t in (FACE, UNDERWATER, COLOUR)}


def get(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]
