from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from iqpfr import data
from iqpfr.degrade import PRESETS


def _write_odd_files(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    Image.fromarray(rgb[..., 0]).save(folder / "b_gray.png")
    Image.fromarray(np.dstack([rgb, np.full((40, 40), 128, np.uint8)])).save(folder / "c_rgba.png")
    Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)).save(folder / "d_16bit.png")
    Image.fromarray(rgb[:, :30]).save(folder / "e_odd_size.jpg")
    Image.fromarray(rgb).convert("P").save(folder / "f_palette.png")
    full = (folder / "a_rgb.png").read_bytes()
    (folder / "g_truncated.png").write_bytes(full[: len(full) // 2])
    (folder / "h_notes.txt").write_text("not an image")
    (folder / "i_empty.jpg").write_bytes(b"")


def test_read_image_conversions(tmp_path):
    _write_odd_files(tmp_path)
    img, notes = data.read_image(tmp_path / "b_gray.png")
    assert img.shape == (40, 40, 3) and "grayscale->RGB" in notes
    img, notes = data.read_image(tmp_path / "c_rgba.png")
    assert img.shape == (40, 40, 3) and any("alpha" in n for n in notes)
    img, notes = data.read_image(tmp_path / "d_16bit.png")
    assert img.dtype == np.float32 and 0 <= img.min() and img.max() <= 1
    for bad in ("g_truncated.png", "h_notes.txt", "i_empty.jpg"):
        with pytest.raises(data.ImageRejected):
            data.read_image(tmp_path / bad)


def test_read_image_keeps_channel_order(tmp_path):
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(tmp_path / "red.png")
    img, _ = data.read_image(tmp_path / "red.png")
    assert img[..., 0].mean() == 1.0 and img[..., 2].mean() == 0.0


def test_ingest_folder_converts_and_reports(tmp_path):
    _write_odd_files(tmp_path / "src")
    with pytest.warns(UserWarning, match="3 of 9 files"):
        manifest, rejects = data.ingest_folder(tmp_path / "src", tmp_path / "out", 32)
    assert len(manifest) == 6 and len(rejects) == 3
    assert set(rejects["file"].map(lambda p: p.split("/")[-1])) == {"g_truncated.png", "h_notes.txt", "i_empty.jpg"}
    on_disk = pd.read_csv(tmp_path / "out" / "rejects.csv")
    assert len(on_disk) == 3 and on_disk["reason"].str.len().min() > 0
    for rec in manifest.to_dict("records"):
        assert data.sha256_file(tmp_path / "out" / rec["file"]) == rec["sha256"]
        assert data.load_png(tmp_path / "out" / rec["file"]).shape == (32, 32, 3)
    odd = manifest[manifest["source"].str.endswith("e_odd_size.jpg")].iloc[0]
    assert "centre-cropped" in odd["conversions"]


def test_ingest_folder_nothing_usable(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "x.txt").write_text("no")
    with pytest.raises(data.ImageRejected, match="no usable image"):
        data.ingest_folder(tmp_path / "src", tmp_path / "out", 32)


def test_build_pairs_is_seeded(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype(np.uint8)).save(src / f"{i}.png")
    data.ingest_folder(src, tmp_path / "hq", 64)
    a = data.build_pairs(tmp_path / "hq", tmp_path / "a", PRESETS["mild"], seed=5)
    b = data.build_pairs(tmp_path / "hq", tmp_path / "b", PRESETS["mild"], seed=5)
    c = data.build_pairs(tmp_path / "hq", tmp_path / "c", PRESETS["mild"], seed=6)
    assert list(a["sha256"]) == list(b["sha256"]) and list(a["sha256"]) != list(c["sha256"])
    assert {"deg_sigma_x", "deg_jpeg_quality", "hq_sha256"} <= set(a.columns)
    data.check_count("a", a, 3)
    with pytest.raises(ValueError, match="expected 4"):
        data.check_count("a", a, 4)


def test_read_manifest_detects_missing_files(tmp_path):
    data.write_csv(tmp_path / "manifest.csv", [{"file": "gone.png", "sha256": "0"}])
    with pytest.raises(FileNotFoundError, match="missing"):
        data.read_manifest(tmp_path)


def test_decompression_bombs_are_rejected(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64*64 > 2 * 1000: PIL refuses to decode
    with pytest.raises(data.ImageRejected, match="too large"):
        data.read_image(tmp_path / "bomb.png")


def test_shared_pool_reuses_one_pool_and_gives_the_same_results():
    from iqpfr import data

    items = [-3, 1, -4, 1, -5, 9, -2, 6] * 3
    alone = data._parallel(abs, items, 2, len(items), "alone")
    with data.shared_pool():
        first = data._parallel(abs, items, 2, len(items), "first")
        pool = data._SHARED["pools"][2]
        second = data._parallel(abs, items[::-1], 2, len(items), "second")
        assert data._SHARED["pools"] == {2: pool}  # the second call ran on the first call's pool
        assert data._parallel(abs, items, 1, len(items), "serial") == alone  # no pool for one worker
    assert "pools" not in data._SHARED  # stopped with the block
    assert first == alone == [abs(i) for i in items] and second == alone[::-1]
