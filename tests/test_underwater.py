"""The underwater task: formation model, judges with known answers, colour-aware true quality,
the task abstraction (faces unchanged), and a tiny-profile run of its stages and notebook 05."""
from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from iqpfr import cli, codebook, conditioned, task, truequality, underwater, uwmetrics
from iqpfr.config import load_params, task_params
from iqpfr.degrade import PRESETS, degrade


def _scene(r=32, seed=0):
    clean, depth, _ = underwater.render_scene([seed, 9, 0], r)
    return clean, depth


# ----------------------------------------------------------------------------------------------
# formation model


def test_zero_depth_transmits_everything():
    clean, depth = _scene()
    w = underwater.Water("III", range_scale=1.0, light=1.0, scatter=0.0, noise=0.0)
    raw = underwater.formation(clean, np.zeros_like(depth), w, np.random.default_rng(0))
    assert np.abs(raw - clean).max() <= 1 / 255 + 1e-6


@pytest.mark.parametrize("kind", underwater.OCEANIC)
def test_red_is_attenuated_most_in_oceanic_water(kind):
    beta = underwater.JERLOV[kind]
    assert beta[0] > beta[1] and beta[0] > beta[2]
    white = np.ones((16, 16, 3), np.float32)
    w = underwater.Water(kind, 1.0, 1.0, 0.0, 0.0)
    # the direct signal alone (veiling light off) keeps its least red at any depth
    t = np.exp(-np.array(beta) * 5.0)
    raw = underwater.formation(white, np.full((16, 16), 5.0, np.float32), w, np.random.default_rng(0))
    expected = white * t + np.array(underwater.VEILING[kind]) * (1 - t)
    assert np.allclose(raw.mean((0, 1)), expected.mean((0, 1)), atol=1 / 255)
    assert t[0] < t[1] and t[0] < t[2]


def test_formation_output_in_range_and_seeded():
    clean, depth = _scene(seed=3)
    rng = np.random.default_rng(1)
    w = underwater.draw_water(rng, tuple(underwater.JERLOV))
    a = underwater.formation(clean, depth, w, np.random.default_rng(5))
    b = underwater.formation(clean, depth, w, np.random.default_rng(5))
    assert a.min() >= 0 and a.max() <= 1 and a.shape == clean.shape
    assert np.array_equal(a, b)


def test_references_follow_their_target_quality():
    dist = underwater.QualityDistribution(uniform=True, tail_low=0.1)
    errs = []
    for i in range(6):
        imgs, rec = underwater.make_sample(0, "iqa_val", i, 32, dist, ("I", "5C"))
        assert rec["true_quality"] == pytest.approx(truequality.colour(imgs["reference"], imgs["clean"]), abs=1e-4)
        errs.append(abs(rec["true_quality"] - rec["target_quality"]))
    assert np.median(errs) < 0.05


# ----------------------------------------------------------------------------------------------
# judges and true quality


def test_grey_image_scores_zero():
    grey = np.full((32, 32, 3), 0.5, np.float32)
    assert uwmetrics.uiqm(grey) == pytest.approx(0.0, abs=1e-9)
    assert uwmetrics.uciqe(grey) == pytest.approx(0.0, abs=1e-3)


def test_pure_colour_cast():
    from skimage.color import rgb2lab

    red = np.zeros((32, 32, 3), np.float32)
    red[..., 0] = 0.8
    L, a, b = rgb2lab(red)[0, 0]
    chroma = np.hypot(a, b)
    # no chroma spread and no contrast: UCIQE is its saturation term alone
    assert uwmetrics.uciqe(red) == pytest.approx(0.2576 * chroma / np.hypot(chroma, L), rel=1e-6)
    # no edges, no contrast: UIQM is its colourfulness term, negative for a cast without variation
    assert uwmetrics.uicm(red * 255) == pytest.approx(-0.0268 * np.hypot(0.8 * 255, 0.4 * 255), rel=1e-6)
    assert uwmetrics.uiqm(red) == pytest.approx(0.0282 * uwmetrics.uicm(np.rint(red * 255)), rel=1e-9)


def test_contrast_stretch_raises_both_judges():
    rng = np.random.default_rng(0)
    x = (rng.random((32, 32, 3)) * 0.2 + 0.4).astype(np.float32)
    stretched = np.clip((x - 0.5) * 3 + 0.5, 0, 1)
    assert uwmetrics.uciqe(stretched) > uwmetrics.uciqe(x)
    assert uwmetrics.uiqm(stretched) > uwmetrics.uiqm(x)


def test_colour_true_quality_sees_a_cast_that_luma_misses():
    clean, _ = _scene()
    cast = np.clip(clean * np.array([0.6, 1.0, 1.1], np.float32), 0, 1)
    assert truequality.colour(clean, clean) == pytest.approx(1.0)
    assert truequality.luma(cast, clean) > 0.9
    assert truequality.colour(cast, clean) < truequality.luma(cast, clean) - 0.2
    assert 0 <= truequality.colour(np.zeros_like(clean), clean) <= 1


def test_classical_enhancement_balances_the_channels():
    """Gray-world: the channel means of the output are (nearly) equal, whatever the cast."""
    clean, depth = _scene(seed=1)
    raw = underwater.formation(clean, depth, underwater.Water("III", 0.5, 1.0, 0.0, 0.0), np.random.default_rng(0))
    out = uwmetrics.classical_enhance(raw)
    assert out.shape == raw.shape and out.min() >= 0 and out.max() <= 1
    spread = lambda x: float(np.ptp(x.reshape(-1, 3).mean(0)))  # noqa: E731
    assert spread(raw) > 0.1 and spread(out) < 0.25 * spread(raw)


# ----------------------------------------------------------------------------------------------
# the task abstraction


def test_face_task_keeps_the_layout_it_always_had():
    f = task.FACE
    assert (f.world, f.iqa, f.testset, f.scores) == tuple(map(Path, ("data/world", "data/iqa", "data/testset", "data/scores")))
    assert (f.targets, f.prior, f.stage1, f.stage2, f.variants) == tuple(map(Path, (
        "data/targets/targets.pt", "models/prior/iqanet.pt", "models/stage1/vqgan.pt", "models/stage2/restorer.pt",
        "models/variants")))
    assert f.metrics == Path("reports/metrics") and not f.paired_lq and not f.whole_images and f.quality == "luma"


def test_face_params_and_stage1_config_are_unchanged(root):
    p = load_params(root / "profiles" / "default.yaml")
    assert task_params(p, "face") is p
    cfg = asdict(codebook.vqgan_config(p.data, p.vqgan))
    assert cfg == {"resolution": 64, "nf": 32, "ch_mult": (1, 2), "num_res_blocks": 1, "attn_resolutions": (),
                   "emb_dim": 64, "codebook_size": 512, "beta": 0.25, "hq_weight": 0.8, "fusion": "add",
                   "fusion_heads": 4, "disc_nf": 32, "disc_layers": 2}
    u = task_params(p, "underwater")
    assert u.data.resolution == p.underwater.overrides["data"]["resolution"] and u.degrade == p.degrade


def test_face_lq_is_the_degradation_bit_for_bit():
    x = torch.rand(3, 32, 32)
    lq = conditioned.DegradedLQ(PRESETS["mild"])(x, 0, False, np.random.default_rng([0, 1, 2]))
    ref = degrade(x.permute(1, 2, 0).numpy(), np.random.default_rng([0, 1, 2]), PRESETS["mild"])[0]
    assert torch.equal(lq, torch.from_numpy(ref).permute(2, 0, 1))


def test_paired_lq_flips_with_its_gt():
    raws = torch.utils.data.TensorDataset(torch.rand(2, 3, 8, 8), torch.arange(2))
    src = conditioned.PairedLQ(raws)
    assert torch.equal(src(None, 1, False, None), raws[1][0])
    assert torch.equal(src(None, 1, True, None), raws[1][0].flip(2))


# ----------------------------------------------------------------------------------------------
# tiny-profile run of every underwater stage and notebook 05 (what dvc repro runs)


def test_underwater_stages_and_notebook_on_the_tiny_profile(root, tmp_path, in_dir):
    from iqpfr.notebook import run

    shutil.copy(root / "profiles" / "tiny.yaml", tmp_path / "params.yaml")
    shutil.copytree(root / "notebooks", tmp_path / "notebooks")
    in_dir(tmp_path)
    for stage in ("world", "train_prior", "score", "stage1", "latent_targets", "stage2", "variant"):
        assert cli.main(["task", "underwater", stage]) == 0, stage
    t = torch.load(task.UNDERWATER.targets, weights_only=True)
    assert t["format"] == "iqpfr.targets/1" and t["idx_c"].dtype == torch.int16
    assert not Path("data/world").exists() and not Path("models/stage1").exists()  # nothing of the face task touched
    run("notebooks/05_underwater.ipynb", "reports/05_underwater.ipynb")
    m = json.loads(Path("reports/metrics/underwater.json").read_text())
    for row in ("lq", "baseline", "classical", "iqpfr", "reference"):
        assert set(m[row]) == {"psnr_clean", "ssim_clean", "ciede2000_clean", "true_quality", "psnr_reference",
                               "ssim_reference", "uciqe", "uiqm", "S"}
    assert -1 <= m["spearman_S_vs_output_score"] <= 1 and "prior_spearman_val" in m
    assert Path("reports/figures/05/05_reference_scores.png").exists()


def test_tiles_cover_the_image_with_overlap():
    from iqpfr.restore import tile_starts

    for length, tile in ((32, 32), (33, 32), (100, 32), (257, 64)):
        starts = tile_starts(length, tile, tile // 4)
        assert starts[0] == 0 and starts[-1] + tile == length
        assert all(b - a <= tile - tile // 4 for a, b in zip(starts, starts[1:]))


def test_tiled_enhancement_of_any_size_keeps_the_size(tmp_path):
    from iqpfr.restore import RestoreOptions, enhance_tiled
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    torch.manual_seed(0)
    s1 = DualCodebookVQGAN(VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), attn_resolutions=(), emb_dim=8,
                                       codebook_size=16, disc_nf=8))
    model = QualityRestorer(s1, TransformerConfig(8, 8, 16, 1, 2, 16, 32)).eval()
    for h, w in ((10, 40), (16, 16), (37, 53)):
        img = np.random.default_rng(0).random((h, w, 3)).astype(np.float32)
        out = enhance_tiled(model, img, RestoreOptions(batch_size=4), torch.device("cpu"))
        assert out.shape == (h, w, 3) and out.min() >= 0 and out.max() <= 1


def _fake_uieb(root: Path, raw: int = 890, challenging: int = 60) -> None:
    rng = np.random.default_rng(0)
    for sub, n in (("raw-890", raw), ("reference-890", raw), ("challenging-60", challenging)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / sub / f"{i}_img_.png"), rng.integers(0, 255, (12, 20, 3), dtype=np.uint8))


def test_uieb_folder_is_checked_and_split_800_90(tmp_path, in_dir):
    from dataclasses import replace

    from iqpfr.config import load_params

    in_dir(tmp_path)
    p = load_params(Path(__file__).parent.parent / "profiles" / "tiny.yaml")
    data_cfg = replace(p.data, source="folder", folder=str(tmp_path / "UIEB"), resolution=16, num_holdout=10)
    _fake_uieb(tmp_path / "UIEB")
    out = underwater.build_sets(data_cfg, p.iqa, p.underwater)
    t = task.UNDERWATER
    counts = {s: len(pd.read_csv(d / "manifest.csv")) for s, d in (("train", t.world / "train"), ("holdout", t.world / "holdout"),
                                                                ("pairs", t.testset / "pairs"), ("challenging", t.testset / "challenging"))}
    assert counts == {"train": 790, "holdout": 10, "pairs": 90, "challenging": 60} and out["seconds"] >= 0
    pairs = pd.read_csv(t.testset / "pairs" / "manifest.csv")
    train = pd.read_csv(t.world / "train" / "manifest.csv")
    assert "oracle_file" not in pairs and set(pairs["source"]).isdisjoint(train["source"])
    assert cv2.imread(str(t.testset / "pairs" / pairs["file"][0])).shape == (16, 16, 3)


def test_uieb_with_a_missing_image_is_refused(tmp_path):
    from dataclasses import replace

    from iqpfr.config import load_params

    p = load_params(Path(__file__).parent.parent / "profiles" / "tiny.yaml")
    _fake_uieb(tmp_path / "UIEB", raw=889)
    with pytest.raises(ValueError, match="raw-890 holds 889 images; UIEB's has 890"):
        underwater.build_uieb(replace(p.data, source="folder", folder=str(tmp_path / "UIEB")), p.underwater)


@pytest.mark.parametrize("name", ["UNDERWATER", "COLOUR"])
def test_reference_claims_stand_where_the_clean_image_is_missing(name):
    """Each task's `gt_claims` replace its clean-image claims on real test sets: they compare rows
    the task evaluates, by metrics that need no clean image and have a direction."""
    from iqpfr import enhancement

    spec = getattr(enhancement, name)
    rows = {r for r, _, _ in spec.rows}
    assert spec.gt_claims and {m for *_, m in spec.claims} <= spec.needs_clean
    for text, a, b, metric in spec.gt_claims:
        assert {a, b} <= rows and a != b, text
        assert metric in spec.metrics and metric not in spec.needs_clean and metric in spec.directions, text
    assert len({t for t, *_ in spec.claims + list(spec.gt_claims)}) == len(spec.claims) + len(spec.gt_claims)


def test_uieb_folder_through_every_stage_and_notebook_05(root, tmp_path, in_dir):
    """The paper profile's underwater path (`data.source: folder`, UIEB) end to end on the tiny
    profile, on a fake UIEB tree of random images (its numbers mean nothing): every stage runs, and
    notebook 05 reports the reference-side measures and claims where there is no clean scene."""
    from iqpfr import enhancement
    from iqpfr.notebook import run

    shutil.copy(root / "profiles" / "tiny.yaml", tmp_path / "params.yaml")
    shutil.copytree(root / "notebooks", tmp_path / "notebooks")
    in_dir(tmp_path)
    _fake_uieb(tmp_path / "UIEB")
    text = Path("params.yaml").read_text()
    line = "    data: {resolution: 32, num_train: 48, num_holdout: 8}"
    assert line in text  # the tiny profile's underwater override
    Path("params.yaml").write_text(text.replace(line, "    data: {source: folder, folder: UIEB, resolution: 32, num_train: 48, num_holdout: 8}"))
    for stage in ("world", "train_prior", "score", "stage1", "latent_targets", "stage2", "variant"):
        assert cli.main(["task", "underwater", stage]) == 0, stage
    run("notebooks/05_underwater.ipynb", "reports/05_underwater.ipynb")
    m = json.loads(Path("reports/metrics/underwater.json").read_text())
    for row in ("lq", "baseline", "classical", "iqpfr", "reference"):
        assert np.isnan(m[row]["psnr_clean"]) and np.isnan(m[row]["true_quality"]) and np.isfinite(m[row]["psnr_reference"])
    assert set(m["claims"]) == {text for text, *_ in enhancement.UNDERWATER.gt_claims}
