"""Files are data, never code: every tensor file goes through iqpfr.safeload, and a pickle that
would run code is refused by each reader without running it."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from iqpfr import cli, conditioned, iqanet, safeload, task
from iqpfr.train import load_checkpoint


class _Payload:
    """Unpickling this touches a marker file (what an attacker's os.system would do)."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _evil_files(d: Path) -> dict[str, Path]:
    marker = d / "ran"
    files = {
        "bare": _Payload(marker),
        "nested": {"format": "iqpfr.stage2/2", "model": {"w": [1, _Payload(marker)]}},
        "tagged bundle": {"format": "iqpfr.restorer/2", "config": {}, "stage1": _Payload(marker)},
        "tagged targets": {"format": "iqpfr.targets/1", "idx_c": _Payload(marker)},
    }
    out = {}
    for name, obj in files.items():
        out[name] = d / f"{name.replace(' ', '_')}.pt"
        torch.save(obj, out[name])
    assert not marker.exists()
    return out


def test_no_module_calls_torch_load_outside_the_loader(root):
    offenders = []
    for f in (root / "iqpfr").rglob("*.py"):
        if f.name != "safeload.py" and re.search(r"torch\.load\(", f.read_text()):
            offenders.append(f.name)
    assert not offenders, f"torch.load outside iqpfr/safeload.py: {offenders}"


def test_every_reader_refuses_code_without_running_it(tmp_path, in_dir):
    files = _evil_files(tmp_path)
    marker = tmp_path / "ran"
    for path in files.values():
        with pytest.raises(ValueError, match="refused"):
            safeload.load(path)
        with pytest.raises(ValueError, match=re.escape(str(path))):
            load_checkpoint(path, "iqpfr.stage2/2")
        with pytest.raises(ValueError):
            conditioned.load_restorer(path, path)
        with pytest.raises(ValueError):
            iqanet.load(path)
        assert cli.main(["restore", str(tmp_path), "-o", str(tmp_path / "out"), "--aligned",
                         "--checkpoint", str(path)]) == 2
    # the latent targets of a task, read by stage II
    in_dir(tmp_path)
    t = task.UNDERWATER
    t.targets.parent.mkdir(parents=True)
    os.replace(files["tagged targets"], t.targets)
    with pytest.raises(ValueError, match="refused"):
        conditioned.load_targets(1, t)
    assert not marker.exists()


def test_plain_training_state_round_trips(tmp_path):
    from iqpfr.train import rng_state, save_atomic, set_rng_state

    import numpy as np

    np.random.seed(3)
    state = rng_state()
    a = np.random.rand(3)
    save_atomic({"format": "x", "rng": state}, tmp_path / "c.pt")
    set_rng_state(load_checkpoint(tmp_path / "c.pt", "x")["rng"])
    assert np.array_equal(np.random.rand(3), a)


def _saved(tmp_path, obj=None) -> Path:
    p = tmp_path / "t.pt"
    torch.save(obj if obj is not None else {"format": "x", "w": torch.arange(4096.0)}, p)
    return p


def test_damaged_files_are_refused_with_their_name(tmp_path):
    p = _saved(tmp_path)
    raw = bytearray(p.read_bytes())
    cases = {"truncated": raw[:-100], "appended": raw + b"extra bytes", "empty": b""}
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF  # inside the tensor's bytes: torch.load alone would not notice
    cases["bit-flipped"] = flipped
    for name, content in cases.items():
        bad = tmp_path / f"{name}.pt"
        bad.write_bytes(bytes(content))
        with pytest.raises(ValueError, match=re.escape(str(bad))):
            safeload.load(bad)
    assert safeload.load(p)["w"].shape == (4096,)


def test_tensor_digest_sees_any_change():
    a = {"w": torch.arange(6.0).view(2, 3), "cfg": {"k": 1, "t": (1, 2)}}
    same = {"cfg": {"t": (1, 2), "k": 1}, "w": torch.arange(6.0).view(2, 3)}
    assert safeload.tensor_digest(a) == safeload.tensor_digest(same)
    for changed in ({**a, "w": a["w"].clone().index_fill_(1, torch.tensor([0]), 9.0)},
                    {**a, "w": a["w"].view(3, 2)}, {**a, "cfg": {"k": 2, "t": (1, 2)}}):
        assert safeload.tensor_digest(changed) != safeload.tensor_digest(a)


def test_a_finished_run_is_not_reused_for_other_data_or_settings(tmp_path):
    from dataclasses import replace

    from iqpfr.train import Stage1Settings, Stage1Trainer
    from iqpfr.vqgan import VQGANConfig

    cfg = VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), attn_resolutions=(), emb_dim=8, codebook_size=16, disc_nf=8,
                      disc_layers=1)
    s = Stage1Settings(steps=1, batch_size=2, lr=1e-3, gan_start=10**9)
    imgs = torch.utils.data.TensorDataset(torch.rand(4, 3, 16, 16), torch.arange(4))
    Stage1Trainer(cfg, s, imgs, torch.ones(4), inputs="data-a").train(checkpoint=tmp_path / "s1.pt")
    Stage1Trainer(cfg, s, imgs, torch.ones(4), inputs="data-a").resume(tmp_path / "s1.pt")  # same data: fine
    with pytest.raises(ValueError, match="trained on other data"):
        Stage1Trainer(cfg, s, imgs, torch.ones(4), inputs="data-b").resume(tmp_path / "s1.pt")
    with pytest.raises(ValueError, match=r"other settings \(lr\)"):
        Stage1Trainer(cfg, replace(s, lr=2e-3), imgs, torch.ones(4), inputs="data-a").resume(tmp_path / "s1.pt")
