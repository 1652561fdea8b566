"""`iqpfr score FOLDER`: streamed and batched scores equal a per-image loop; two torchrun (gloo)
processes give the same table as one; a killed run resumes without rescoring what it cached; bad
files are reported and the rest scored."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from iqpfr import cli, data, folderscore, iqanet, quality

SIZE = 32


@pytest.fixture
def prior(tmp_path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "prior" / "iqanet.pt"
    iqanet.save(path, iqanet.IqaNet(iqanet.IqaNetConfig(width=8, mode="regression")), {"resolution": SIZE})
    return path


def _folder(root: Path, n: int, bad: bool = True) -> Path:
    rng = np.random.default_rng(0)
    folder = root / "faces"
    for i in range(n):
        size = int(rng.integers(24, 80))
        data.write_png(folder / "sub" / f"f{i:02d}.png", rng.random((size, size, 3), dtype=np.float32))
    if bad:
        (folder / "notes.png").write_text("not an image")
    return folder


def _score(folder: Path, out: Path, prior: Path, *extra: str) -> int:
    return cli.main(["score", str(folder), "-o", str(out), "--prior", str(prior), "--size", str(SIZE),
                     "--batch-size", "4", "--workers", "0", *extra])


def test_streamed_scores_equal_a_per_image_loop(tmp_path, prior):
    folder = _folder(tmp_path, 9)
    out = tmp_path / "scores.csv"
    assert _score(folder, out, prior) == 1  # one rejected file
    table = pd.read_csv(out)
    assert len(table) == 9 and list(table.columns) == ["file", "sha256", "learned"]
    rejected = pd.read_csv(tmp_path / "scores.rejected.csv")
    assert rejected["file"].tolist() == ["notes.png"] and "not a readable image" in rejected["reason"][0]
    metric = quality.make_metric("learned", "cpu", prior)
    ds = folderscore._Files([folder / f for f in table["file"]], SIZE, frozenset())
    with torch.no_grad():
        one_by_one = [float(metric(ds[i][2][None])[0]) for i in range(len(ds))]
    np.testing.assert_allclose(table["learned"], one_by_one, rtol=1e-5, atol=1e-6)


def test_rerun_and_growth_score_only_what_is_new(tmp_path, prior):
    folder = _folder(tmp_path, 6, bad=False)
    out = tmp_path / "scores.csv"
    first = folderscore.score_folder(folder, out, ["learned"], SIZE, prior, workers=0)
    assert first.computed == 6 and first.exit_code == 0
    again = folderscore.score_folder(folder, out, ["learned"], SIZE, prior, workers=0)
    assert again.computed == 0
    data.write_png(folder / "new.png", np.zeros((40, 40, 3), np.float32))
    grown = folderscore.score_folder(folder, out, ["learned"], SIZE, prior, workers=0)
    assert grown.computed == 1 and len(grown.table) == 7


def _launch(args: list[str], cwd: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "IQPFR_THREADS": "1"}
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def test_two_torchrun_processes_give_one_process_table(tmp_path, prior):
    folder = _folder(tmp_path, 11)
    single, double = tmp_path / "one.csv", tmp_path / "two.csv"
    assert _score(folder, single, prior) == 1
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    p = _launch([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "iqpfr.cli", "score", str(folder), "-o",
                 str(double), "--prior", str(prior), "--size", str(SIZE), "--batch-size", "4", "--workers", "0"],
                tmp_path)
    out, _ = p.communicate(timeout=300)  # exit code 1 (a file was rejected), as for one process
    assert sorted(p.name for p in tmp_path.glob("two.csv.cache.jsonl.rank*.jsonl")) == [
        "two.csv.cache.jsonl.rank0.jsonl", "two.csv.cache.jsonl.rank1.jsonl"], out[-2000:]
    a, b = pd.read_csv(single), pd.read_csv(double)
    pd.testing.assert_frame_equal(a, b, rtol=1e-6)
    assert pd.read_csv(tmp_path / "two.rejected.csv")["file"].tolist() == ["notes.png"]


def test_a_killed_run_resumes_without_rescoring(tmp_path, prior):
    folder = _folder(tmp_path, 40, bad=False)
    out = tmp_path / "scores.csv"
    shard = tmp_path / "scores.csv.cache.jsonl.rank0.jsonl"
    p = _launch([sys.executable, "-m", "iqpfr.cli", "score", str(folder), "-o", str(out), "--prior", str(prior),
                 "--size", str(SIZE), "--batch-size", "2", "--workers", "0"], tmp_path)
    deadline = time.time() + 120
    while (not shard.exists() or shard.read_text().count("\n") < 4) and p.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    p.send_signal(signal.SIGKILL)
    p.wait()
    cached = len(quality.ScoreCache(shard).values)
    assert 0 < cached < 40 and not out.exists(), "the kill landed too late to test anything"
    resumed = folderscore.score_folder(folder, out, ["learned"], SIZE, prior, batch_size=2, workers=0)
    assert resumed.computed == 40 - cached and len(resumed.table) == 40
    whole = folderscore.score_folder(folder, tmp_path / "fresh.csv", ["learned"], SIZE, prior, workers=0)
    np.testing.assert_allclose(pd.read_csv(out)["learned"], pd.read_csv(tmp_path / "fresh.csv")["learned"], rtol=1e-5)
    assert whole.computed == 40


def test_missing_ensemble_metric_and_folder_are_usage_errors(tmp_path, prior, capsys):
    folder = _folder(tmp_path, 2, bad=False)
    stats = tmp_path / "norm.json"
    quality.NormStats({"niqe": {"min": 0.0, "max": 1.0, "lower_better": True, "weights_hash": "x"}}, ["niqe"]).save(stats)
    assert _score(folder, tmp_path / "s.csv", prior, "--norm-stats", str(stats)) == 2
    assert "ensemble" in capsys.readouterr().err
    assert _score(tmp_path / "absent", tmp_path / "s.csv", prior) == 2
