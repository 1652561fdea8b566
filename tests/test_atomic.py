"""A failing disk during a write: ENOSPC (a real one, from the kernel: the temporary file is made a
link to /dev/full) or EIO (raised by fsync, where it usually surfaces) leaves the previous file
intact and byte for byte the same, leaves no temporary file behind, and says which file failed."""
from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from iqpfr import atomic, data, pipeline, safeload, train

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")


def _writers(tmp_path: Path):
    """(name, target file, write the old content, write the new content) for each kind of writer."""
    ckpt = tmp_path / "models" / "ckpt.pt"
    png = tmp_path / "out" / "face.png"
    csv = tmp_path / "set" / "manifest.csv"
    img = np.linspace(0, 1, 8 * 8 * 3, dtype=np.float32).reshape(8, 8, 3)
    return [
        ("checkpoint", ckpt, lambda: train.save_atomic({"format": "t", "w": torch.zeros(3)}, ckpt),
         lambda: train.save_atomic({"format": "t", "w": torch.ones(300_000)}, ckpt)),
        ("png", png, lambda: data.write_png(png, img), lambda: data.write_png(png, 1 - img)),
        ("csv", csv, lambda: data.write_csv(csv, [{"a": 1}]), lambda: data.write_csv(csv, [{"a": 2}] * 10_000)),
    ]


def _fail_with_enospc(target: Path) -> None:
    atomic.temporary(target).symlink_to("/dev/full")


def _fail_with_eio(monkeypatch) -> None:
    def fsync(fd):
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(atomic.os, "fsync", fsync)


@needs_dev_full
@pytest.mark.parametrize("kind", ["checkpoint", "png", "csv"])
def test_enospc_keeps_the_previous_file(tmp_path, kind):
    name, target, old, new = next(w for w in _writers(tmp_path) if w[0] == kind)
    old()
    before = target.read_bytes()
    _fail_with_enospc(target)
    with pytest.raises(OSError) as err:
        new()
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "unchanged" in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name], "a temporary file was left behind"


@pytest.mark.parametrize("kind", ["checkpoint", "png", "csv"])
def test_eio_keeps_the_previous_file(tmp_path, monkeypatch, kind):
    name, target, old, new = next(w for w in _writers(tmp_path) if w[0] == kind)
    old()
    before = target.read_bytes()
    _fail_with_eio(monkeypatch)
    with pytest.raises(OSError) as err:
        new()
    assert err.value.errno == errno.EIO and str(target) in str(err.value)
    assert target.read_bytes() == before
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


def test_a_first_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "metrics" / "x.json"
    _fail_with_eio(monkeypatch)
    with pytest.raises(OSError, match="no x.json was written"):
        atomic.write_text(target, "{}")
    assert list(target.parent.iterdir()) == []


def test_an_exception_inside_the_block_leaves_the_old_file(tmp_path):
    target = tmp_path / "f.bin"
    atomic.write_bytes(target, b"old")
    with pytest.raises(KeyError):
        with atomic.replacing(target) as fh:
            fh.write(b"half of the new")
            raise KeyError("the producer failed")
    assert target.read_bytes() == b"old" and not atomic.temporary(target).exists()


@needs_dev_full
def test_training_on_a_full_disk_stops_with_the_last_checkpoint_intact(tmp_path, monkeypatch):
    """A Stage-I run whose second checkpoint write hits ENOSPC: the error names the checkpoint, and
    the file on disk is the first checkpoint, readable and at its step."""
    from iqpfr.vqgan import VQGANConfig

    cfg = VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), emb_dim=8,
                      codebook_size=16, disc_nf=8, disc_layers=1)
    images = torch.utils.data.TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8))
    s = train.Stage1Settings(steps=4, batch_size=4, lr=1e-3, checkpoint_every=2, log_every=1, gan_start=100)
    trainer = train.Stage1Trainer(cfg, s, images, torch.ones(8))
    ckpt = tmp_path / "vqgan.pt"
    trainer.train(until=2, checkpoint=ckpt)
    first = ckpt.read_bytes()
    _fail_with_enospc(ckpt)
    with pytest.raises(OSError, match="vqgan.pt failed .*unchanged"):
        trainer.train(checkpoint=ckpt)
    assert ckpt.read_bytes() == first and safeload.load(ckpt)["step"] == 2
    assert not atomic.temporary(ckpt).exists()


def test_metrics_are_written_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the face task's paths are relative to the project root
    path = pipeline.write_metrics("m", {"a": 1.0})
    before = path.read_bytes()
    _fail_with_eio(monkeypatch)
    with pytest.raises(OSError, match="m.json failed"):
        pipeline.write_metrics("m", {"a": 2.0})
    assert path.read_bytes() == before
