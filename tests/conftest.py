"""Shared fixtures: the repository root, the tiny profile, and a tiny project built once."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """A scratch project on the tiny profile with the world, IQA sets, helper set, prior and test set built
    (the CLI stages, as `dvc repro` runs them). Tests must not modify it."""
    from iqpfr import cli

    proj = tmp_path_factory.mktemp("tiny")
    shutil.copy(ROOT / "profiles" / "tiny.yaml", proj / "params.yaml")
    shutil.copytree(ROOT / "notebooks", proj / "notebooks")
    old = Path.cwd()
    os.chdir(proj)
    try:
        for stage in ("world", "iqa_data", "iqa_helper", "train_prior", "testset"):
            assert cli.main(["stage", stage]) == 0
    finally:
        os.chdir(old)
    return proj


@pytest.fixture
def in_dir(request):
    """Change into a folder for the duration of a test: `in_dir(path)`."""
    old = Path.cwd()

    def enter(path: Path) -> Path:
        os.chdir(path)
        return path

    yield enter
    os.chdir(old)
