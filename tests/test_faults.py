"""Killed and resumed: training killed with SIGKILL at seeded random moments (also while a
checkpoint is being written) and started again ends with the same checkpoint, bit for bit, as an
uninterrupted run; a half-written file is never taken for the checkpoint.

The fast variant (CI) kills stage I and stage II of the tiny profile a few times each; the slow
variant (`pytest -m slow tests/test_faults.py`) tries many more kill points."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from iqpfr import safeload

STAGES = {"stage1": ("models/stage1/vqgan.pt", "iqpfr.stage1/3"), "stage2": ("models/stage2/restorer.pt", "iqpfr.stage2/3")}


def _project(tiny_project: Path, dst: Path, steps: int) -> Path:
    shutil.copytree(tiny_project, dst)
    raw = yaml.safe_load((dst / "params.yaml").read_text())
    raw["stage1"].update(steps=steps, checkpoint_every=3, gan_start=steps // 2)
    raw["stage2"].update(steps=steps, checkpoint_every=3, quality_start=steps // 2)
    (dst / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return dst


def _prepare(proj: Path) -> None:
    """Scores, stage I and targets for the stage-II runs (uninterrupted)."""
    env = {**os.environ, "IQPFR_THREADS": "1"}
    code = ("from iqpfr import pipeline; from iqpfr.config import load_params; p = load_params(); "
            "pipeline.score_dataset(p.data, p.scoring)")
    subprocess.run([sys.executable, "-c", code], cwd=proj, env=env, check=True, capture_output=True)


def _run(proj: Path, stage: str, kill_after: float | None) -> int | None:
    """Run `iqpfr train STAGE`; SIGKILL it after `kill_after` seconds (None: let it finish).
    Returns the exit code, or None when it was killed."""
    env = {**os.environ, "IQPFR_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-m", "iqpfr.cli", "train", stage], cwd=proj, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if kill_after is None:
        return p.wait()
    try:
        return p.wait(timeout=kill_after)
    except subprocess.TimeoutExpired:
        p.send_signal(signal.SIGKILL)
        p.wait()
        return None


def _state(path: Path, fmt: str) -> dict:
    ckpt = safeload.load(path)
    assert ckpt["format"] == fmt
    # everything but the log (wall-clock timings) and the global numpy/python RNG states: training
    # draws from per-step seeded generators only, and a fresh process seeds those globals from the OS
    state = {k: v for k, v in ckpt.items() if k not in ("log", "rng")}
    state["torch_rng"] = ckpt["rng"]["torch"]
    return state


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def _kill_and_resume(tiny_project, tmp_path, stage: str, kills: int, seed: int, steps: int) -> dict:
    ckpt, fmt = STAGES[stage]
    ref = _project(tiny_project, tmp_path / "ref", steps)
    runs = _project(tiny_project, tmp_path / "killed", steps)
    for proj in (ref, runs):
        _prepare(proj)
        if stage == "stage2":
            for cmd in (["train", "stage1"], ["stage", "latent_targets"]):
                subprocess.run([sys.executable, "-m", "iqpfr.cli", *cmd], cwd=proj, check=True, capture_output=True)
    t0 = time.time()
    assert _run(ref, stage, None) == 0
    whole = time.time() - t0
    rng = np.random.default_rng(seed)
    report = {"kills": 0}
    for _ in range(kills):
        code = _run(runs, stage, float(rng.uniform(0.2, 1.0) * whole))
        if code is not None:  # it finished before the kill landed
            assert code == 0
            break
        report["kills"] += 1
        ck = runs / ckpt
        if ck.exists():  # whatever the kill interrupted, the checkpoint on disk is whole and readable
            safeload.load(ck)
    assert _run(runs, stage, None) == 0
    assert _equal(_state(runs / ckpt, fmt), _state(ref / ckpt, fmt)), "a resumed run differs from the uninterrupted one"
    return report


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_killed_training_resumes_to_the_same_bits(tiny_project, tmp_path, stage):
    report = _kill_and_resume(tiny_project, tmp_path, stage, kills=3, seed=0, steps=24)
    assert report["kills"] >= 1, "no kill landed: the test would prove nothing"


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_many_kill_points(tiny_project, tmp_path, stage, seed):
    report = _kill_and_resume(tiny_project, tmp_path, stage, kills=8, seed=seed, steps=60)
    print(f"{stage} seed {seed}: {report}")


def _dvc_project(tiny_project: Path, dst: Path, root: Path, steps: int) -> Path:
    """A DVC project on the tiny profile (no git), with stage I long enough to be killed mid-run."""
    dst.mkdir()
    deps = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]["train_codebook"]["deps"]
    metrics = [d for d in map(str, deps) if d.startswith("reports/metrics/")]  # the benchmarks' files (and stamps) it reads
    for name in ("dvc.yaml", "notebooks", "iqpfr", "weights/README.md", *metrics):
        src = root / name
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / name)
    raw = yaml.safe_load((tiny_project / "params.yaml").read_text())
    raw["stage1"].update(steps=steps, checkpoint_every=5, gan_start=steps // 2)
    (dst / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=dst, check=True)
    return dst


def _dvc(proj: Path, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "IQPFR_THREADS": "1", "DVC_NO_ANALYTICS": "1"}
    return subprocess.Popen(["dvc", *args], cwd=proj, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True, **kw)


@pytest.mark.slow
def test_dvc_repro_after_a_kill_completes(tiny_project, tmp_path, root):
    """`dvc repro` SIGKILLed (with its notebook) while stage I trains, then run again: it resumes
    from the persisted checkpoint, completes, leaves the stage up to date, and ends with the same
    stage-I checkpoint as an uninterrupted run."""
    proj = _dvc_project(tiny_project, tmp_path / "proj", root, steps=40)
    ckpt = proj / STAGES["stage1"][0]
    p = _dvc(proj, "repro", "train_codebook")
    deadline = time.time() + 900
    while not ckpt.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    if not (ckpt.exists() and p.poll() is None):
        out = p.stdout.read() if p.poll() is not None else ""
        pytest.fail(f"stage I finished or failed before a checkpoint could be killed: {out[-3000:]}")
    os.killpg(p.pid, signal.SIGKILL)  # dvc, papermill and the kernel together
    p.wait()
    killed_at = safeload.load(ckpt)["step"]
    assert 0 < killed_at < 40
    again = _dvc(proj, "repro", "train_codebook")
    out, _ = again.communicate(timeout=900)
    assert again.returncode == 0, out[-3000:]
    status = _dvc(proj, "status", "train_codebook")
    st, _ = status.communicate(timeout=300)
    assert "up to date" in st or st.strip() == "", st
    executed = (proj / "reports" / "02_train_codebook.ipynb").read_text()
    assert "resumed models/stage1/vqgan.pt at step" in executed, "the rerun did not resume the killed run"
    resumed = _state(ckpt, STAGES["stage1"][1])
    ckpt.rename(ckpt.with_name("resumed.pt"))
    assert _run(proj, "stage1", None) == 0  # the same stage, uninterrupted
    assert _equal(resumed, _state(ckpt, STAGES["stage1"][1])), "the resumed DVC run differs from an uninterrupted one"
