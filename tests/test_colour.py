"""The colour task: the colour degradation preset, colour flaws with known true quality,
colourfulness, the task on the face task's stage I, a tiny-profile run of notebook 06 and of
benchmarks/colour_budget.py."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from iqpfr import cli, colour, enhancement, pipeline, task, truequality
from iqpfr.config import load_params, task_params
from iqpfr.data import load_png
from iqpfr.degrade import PRESETS, DegradeRanges, degrade
from iqpfr.synthfaces import render_face
from iqpfr.world import QualityDistribution


def _face(seed=0, r=32):
    return render_face([seed, 99, 0], r).image


def test_colour_preset_draws_the_authors_ranges_and_records_them():
    p = PRESETS["colour"]
    assert (p.colour_jitter_prob, p.gray_prob) == (0.3, 0.01)
    always = DegradeRanges(colour_jitter_prob=1.0)
    for i in range(20):
        _, rec = degrade(_face(), np.random.default_rng(i), always)
        assert 0.5 <= rec["jitter_brightness"] <= 1.5 and 0.5 <= rec["jitter_contrast"] <= 1.5
        assert 0.0 <= rec["jitter_saturation"] <= 1.5 and -0.1 <= rec["jitter_hue"] <= 0.1


def test_gray_probability_and_gray_output():
    half = DegradeRanges(gray_prob=0.5)
    outs = [degrade(_face(), np.random.default_rng(i), half) for i in range(200)]
    grays = [(img, rec) for img, rec in outs if rec.get("gray")]
    assert 0.4 < len(grays) / len(outs) < 0.6
    img = grays[0][0]
    assert np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])


def test_a_pure_hue_shift_lowers_colour_true_quality():
    x = _face()
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + 40) % 360
    shifted = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    assert truequality.colour(x, x) == pytest.approx(1.0)
    assert truequality.colour(shifted, x) < 0.8 < truequality.luma(shifted, x) + 0.1


def test_colourfulness_is_zero_for_gray_and_grows_with_saturation():
    x = _face()
    assert colour.colourfulness(colour.gray(x)) == pytest.approx(0.0)
    more = np.clip(colour._saturate(x, 1.5), 0, 1)
    assert colour.colourfulness(more) > colour.colourfulness(x) > 0


def test_region_chroma_says_where_the_colour_is():
    x = _face(r=64)
    assert colour.region_chroma(colour.gray(x)) == pytest.approx({"centre": 0.0, "border": 0.0}, abs=0.01)  # rgb2lab: ~0.004 on gray
    inside = colour.centre_mask(64)
    assert inside[32, 32] and not inside[0, 0] and not inside[63, 63]
    assert np.array_equal(inside, inside[:, ::-1])  # symmetric about the vertical axis
    border_only = np.where(inside[..., None], colour.gray(x), x)
    c = colour.region_chroma(border_only)
    assert c["centre"] == pytest.approx(0.0, abs=0.01) and c["border"] > 5
    assert colour.region_chroma(x)["border"] == pytest.approx(c["border"])
    with pytest.raises(ValueError, match="square"):
        colour.region_chroma(x[:, :40])


def test_region_ciede2000_splits_the_difference_by_region():
    x = _face(r=64)
    assert colour.region_ciede2000(x, x) == pytest.approx({"centre": 0.0, "border": 0.0})
    inside = colour.centre_mask(64)[..., None]
    border_gray = colour.region_ciede2000(np.where(inside, x, colour.gray(x)), x)
    assert border_gray["centre"] == pytest.approx(0.0) and border_gray["border"] > 1
    whole = truequality.ciede2000(colour.gray(x), x)
    both = colour.region_ciede2000(colour.gray(x), x)
    share = inside.mean()
    assert share * both["centre"] + (1 - share) * both["border"] == pytest.approx(whole, rel=1e-5)


def test_gray_regions_compare_the_gray_outputs_with_the_gts_and_the_gray_input():
    from iqpfr.enhancement import gray_regions

    gt = {"colourfulness": 60.0, "chroma_centre": 20.0, "chroma_border": 40.0}
    out = {"colourfulness": 30.0, "chroma_centre": 20.0, "chroma_border": 10.0,
           "ciede2000_oracle_centre": 8.0, "ciede2000_oracle_border": 25.0}
    lq = {"ciede2000_oracle_centre": 12.0, "ciede2000_oracle_border": 24.0}
    assert gray_regions({"baseline_plus_gray": out, "gt": gt, "gray_lq": lq}) == pytest.approx(
        {"gray_colourfulness_ratio_to_gt": 0.5, "gray_chroma_ratio_centre": 1.0, "gray_chroma_ratio_border": 0.25,
         "gray_ciede2000_minus_input_centre": -4.0, "gray_ciede2000_minus_input_border": 1.0})


def test_colour_flaws_start_at_the_clean_face_and_lean_warm():
    x = _face()
    rng = np.random.default_rng(0)
    flaws = [colour.Flaws.draw(rng) for _ in range(200)]
    assert np.array_equal(colour.colour_flaws(x, 0.0, flaws[0]), truequality._grid(x))
    warm = np.mean([f.gains[0] > 1 and f.gains[2] < 1 for f in flaws])
    assert abs(warm - colour.WARM_SHARE) < 0.1


def test_gts_follow_their_target_colour_quality():
    dist = QualityDistribution(uniform=True, tail_low=0.3)
    errs = []
    for i in range(6):
        gt, oracle, rec = colour.make_sample(0, "iqa_val", i, 32, dist)
        assert rec["true_quality"] == pytest.approx(truequality.colour(gt, oracle), abs=1e-4)
        errs.append(abs(rec["true_quality"] - rec["target_quality"]))
    assert np.median(errs) < 0.05


def test_the_colour_task_reads_the_face_stage_I_and_never_trains_one(root, tmp_path, in_dir):
    assert task.COLOUR.stage1 == task.FACE.stage1 and task.COLOUR.stage2 != task.FACE.stage2
    shutil.copy(root / "profiles" / "tiny.yaml", tmp_path / "params.yaml")
    in_dir(tmp_path)
    assert cli.main(["task", "colour", "stage1"]) == 2
    assert not Path("models/stage1").exists()


def test_colour_stages_and_notebook_on_the_tiny_profile(tiny_project, tmp_path, in_dir, capsys):
    from iqpfr.notebook import run

    proj = tmp_path / "p"
    shutil.copytree(tiny_project, proj)
    in_dir(proj)
    text = Path("params.yaml").read_text()  # every test LQ gray, whatever training's degrade.gray_prob (0.1)
    Path("params.yaml").write_text(text.replace("test_gray_prob: 0.1 ", "test_gray_prob: 1.0 "))
    p = load_params("params.yaml")
    assert p.colour.test_gray_prob == 1.0 and task_params(p, "colour").degrade.gray_prob == 0.1
    pipeline.score_dataset(p.data, p.scoring)  # the face task's scores, for its stage I's gate
    assert cli.main(["train", "stage1"]) == 0
    # the face rows the colour rows are fine-tuned from (colour.finetune)
    assert p.colour.finetune == {"main": "baseline_plus", "baseline": "baseline"}
    assert cli.main(["stage", "latent_targets"]) == 0
    for face_row in ("baseline_plus", "baseline"):
        assert cli.main(["variant", face_row]) == 0
    for stage in ("world", "train_prior", "score", "latent_targets", "stage2", "variant"):
        assert cli.main(["task", "colour", stage]) == 0, stage
    for folder in ("gray", "pairs"):  # the test set's own grayscale share (1.0 here), not training's
        lq = np.stack([np.asarray(cv2.imread(str(f))) for f in sorted(Path(f"data/colour/testset/{folder}/lq").glob("*.png"))])
        assert (lq[..., 0] == lq[..., 1]).all() and (lq[..., 1] == lq[..., 2]).all(), folder
    spec = importlib.util.spec_from_file_location("colour_budget", Path(__file__).parents[1] / "benchmarks" / "colour_budget.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    fit = json.loads(Path("reports/metrics/colour/variants/baseline.json").read_text())
    assert fit["finetuned_from"] == str(task.FACE.variants / "baseline" / "restorer.pt")
    assert not bench.same_weights(task.FACE.variants / "baseline" / "restorer.pt", task.COLOUR.variants / "baseline" / "restorer.pt")
    # a row cannot start from a face row of another recipe (Baseline+ has a score embedding, the baseline none)
    from iqpfr.conditioned import load_restorer, start_from
    plus, _ = load_restorer(task.COLOUR.stage2, task.COLOUR.stage1)
    with pytest.raises(ValueError, match="conditioning"):
        start_from(plus, task.FACE.variants / "baseline" / "restorer.pt")
    run("notebooks/06_colour.ipynb", "reports/06_colour.ipynb")
    m = json.loads(Path("reports/metrics/colour.json").read_text())
    for row in ("lq", "gray_lq", "baseline", "baseline_plus"):
        assert {"ciede2000_oracle", "colourfulness", "true_quality", "psnr_gt", "S"} <= set(m[row])
    assert m["gray_lq"]["colourfulness"] == pytest.approx(0.0)
    assert m["gray_lq"]["chroma_centre"] == pytest.approx(0.0, abs=0.01) and m["gt"]["chroma_border"] > 0
    assert m["gray_chroma_ratio_border"] == pytest.approx(m["baseline_plus_gray"]["chroma_border"] / m["gt"]["chroma_border"])
    assert "prior_spearman_val" in m and -1 <= m["spearman_S_vs_output_score"] <= 1
    # benchmarks/colour_budget.py: a snapshot at step k of a longer run is the k-step run the stages train
    cp = task_params(p, "colour")
    steps, baseline = cp.stage2.steps, task.COLOUR.variants / p.colour.baseline / "restorer.pt"
    paths = bench.snapshot_rows(p, {"baseline_plus": "main", "baseline": p.colour.baseline}, steps + 2,
                                [steps, steps + 2], tmp_path / "snap", progress=lambda *_: None)
    assert bench.same_weights(paths["baseline_plus", steps], task.COLOUR.stage2)
    assert bench.same_weights(paths["baseline", steps], baseline)
    assert not bench.same_weights(paths["baseline", steps + 2], baseline)
    seconds: dict = {}  # another batch size is another run, timed
    half = bench.snapshot_rows(p, {"baseline_plus": "main"}, steps, [steps], tmp_path / "half", progress=lambda *_: None,
                               batch_size=max(1, cp.stage2.batch_size // 2), seconds=seconds)
    assert not bench.same_weights(half["baseline_plus", steps], task.COLOUR.stage2) and seconds["baseline_plus", steps] > 0
    oracle = bench.snapshot_rows(p, {"baseline_plus": "main"}, steps, [steps], tmp_path / "oracle",
                                 progress=lambda *_: None, true_scores=True)  # bins from the GTs' true quality
    assert not bench.same_weights(oracle["baseline_plus", steps], task.COLOUR.stage2)
    s = bench.prior_scores(p, cp.iqa.num_train, tmp_path / "prior_scores")  # the pipeline's prior, retrained
    assert s.shape == (cp.data.num_train,) and float(s.min()) == 0.0 and float(s.max()) == 1.0
    assert np.allclose(s.numpy(), pd.read_csv(task.COLOUR.scores / "train.csv")["S"], atol=1e-5)  # the score stage's S
    with pytest.raises(ValueError, match="one source"):
        bench.snapshot_rows(p, {"baseline_plus": "main"}, steps, [steps], tmp_path / "x", true_scores=True, scores=s)
    r = bench.evaluate_snapshot(paths["baseline_plus", steps], paths["baseline", steps], tmp_path / "snap",
                                p.evaluation.score, cp.transformer.guidance)
    assert r["baseline_plus_ciede2000_oracle"] == pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    assert r["baseline_ciede2000_oracle"] == pytest.approx(m["baseline"]["ciede2000_oracle"])
    assert r["low"] <= r["diff"] <= r["high"]
    assert r["gray_chroma_ratio_centre"] == pytest.approx(m["gray_chroma_ratio_centre"])
    # benchmarks/colour_design.py: its row at the params' gray share is the pipeline's models, restored
    # without AdaIN as the task restores (the notebook's numbers) and, differently, with it
    spec = importlib.util.spec_from_file_location("colour_design", Path(__file__).parents[1] / "benchmarks" / "colour_design.py")
    design = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(design)
    d = design.main(["--root", str(proj), "--gray", "0.1", "0.5", "--start", "both", "--adain", "both",
                     "--guidance", str(cp.transformer.guidance), "1.0", "--on", "test", "--out", str(tmp_path / "design.csv")])
    assert len(d) == 16 and set(d["gray_prob"]) == {0.1, 0.5} and set(d["start"]) == {"face", "stage1"}
    assert d["pipeline"].sum() == 2  # gray 0.1, fine-tuned, the params' w: with and without AdaIN
    own = d[d["pipeline"]].set_index("adain")
    assert own.loc[False, "baseline_plus_ciede2000_oracle"] == pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    assert own.loc[True, "baseline_plus_ciede2000_oracle"] != pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    from_stage1 = d[(d["gray_prob"] == 0.1) & (d["start"] == "stage1") & ~d["adain"] & (d["guidance"] == cp.transformer.guidance)]
    assert from_stage1["baseline_plus_ciede2000_oracle"].iloc[0] != pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    # --ema-decay: the params' decay is the pipeline's models; another decay (0: raw weights) trains its own rows
    own_decay = cp.stage2.ema_decay
    e = design.main(["--root", str(proj), "--gray", "0.1", "--start", "face", "--ema-decay", str(own_decay), "0.0",
                     "--guidance", str(cp.transformer.guidance), "--on", "test", "--out", str(tmp_path / "ema.csv")])
    assert list(e["ema_decay"]) == [own_decay, 0.0] and list(e["pipeline"]) == [True, False]
    assert e["baseline_plus_ciede2000_oracle"].iloc[0] == pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    assert e["baseline_plus_ciede2000_oracle"].iloc[1] != pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    longer = design.main(["--root", str(proj), "--gray", "0.1", "--start", "face", "--steps", str(cp.stage2.steps + 1),
                          "--guidance", str(cp.transformer.guidance), "--on", "test", "--out", str(tmp_path / "steps.csv")])
    assert list(longer["steps"]) == [cp.stage2.steps + 1] and not longer["pipeline"].any()
    # each table's provenance stamp: its world, and the pipeline's models where a row is theirs
    stamp = json.loads((tmp_path / "design.csv.provenance.json").read_text())
    assert stamp["world"]["resolution"] == cp.data.resolution and str(task.COLOUR.stage2) in stamp["models"]
    assert json.loads((tmp_path / "steps.csv.provenance.json").read_text())["models"] == {}
    assert longer["baseline_plus_ciede2000_oracle"].iloc[0] != pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    with pytest.raises(SystemExit, match="steps"):
        design.main(["--root", str(proj), "--steps", "0", "--out", str(tmp_path / "bad.csv")])
    # benchmarks/colour_prior.py: the pipeline's row is the pipeline's prior; more labelled images are
    # rendered as colour_world renders them (their first images are the pipeline's: checked inside)
    spec = importlib.util.spec_from_file_location("colour_prior", Path(__file__).parents[1] / "benchmarks" / "colour_prior.py")
    prior_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(prior_bench)
    n = cp.iqa.num_train
    t = prior_bench.main(["--root", str(proj), "--pools", str(cp.prior.input_pool), "--train-images", str(n), str(n + 16),
                          "--out", str(tmp_path / "prior.csv")])
    assert list(t["train_images"]) == [n, n + 16] and list(t["matches_pipeline"]) == [True, None]
    assert t["spearman_train_gts"].between(-1, 1).all() and t["spearman_val"].iloc[0] != t["spearman_val"].iloc[1]
    with pytest.raises(SystemExit, match="ema-decay"):
        design.main(["--root", str(proj), "--ema-decay", "1.0", "--out", str(tmp_path / "bad.csv")])
    in_dir(proj)  # the designs are chosen on validation faces: none of them is a test face
    val = design.validation_data(p, tmp_path / "val")
    shas = {f: set(pd.read_csv(root / "testset/pairs/manifest.csv")["hq_sha256"]) for f, root in
            (("val", val), ("test", task.COLOUR.data))}
    assert len(shas["val"]) == p.colour.num_test and not shas["val"] & shas["test"]
    c = bench.ceiling(task.COLOUR.stage1, task.COLOUR.testset / "pairs")
    assert c["pristine_ciede2000_oracle"] == 0.0 and c["pristine_reconstructed_ciede2000_oracle"] > 0.0
    # benchmarks/colour_seeds.py: the params' seed is the pipeline's models; another seed trains its own
    spec = importlib.util.spec_from_file_location("colour_seeds", Path(__file__).parents[1] / "benchmarks" / "colour_seeds.py")
    seeds = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(seeds)
    own_seed = cp.stage2.seed
    claims, rows = seeds.main(["--root", str(proj), "--seeds", str(own_seed), str(own_seed + 1), "--out", str(tmp_path / "seeds.csv")])
    in_dir(proj)
    mean = rows.set_index(["seed", "row"])["ciede2000_oracle"]
    assert mean[own_seed, "baseline_plus"] == pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    assert str(task.COLOUR.stage2) in json.loads((tmp_path / "seeds.csv.provenance.json").read_text())["models"]
    assert mean[own_seed + 1, "baseline_plus"] != pytest.approx(m["baseline_plus"]["ciede2000_oracle"])
    assert mean[own_seed, "gt"] == mean[own_seed + 1, "gt"]  # the GT row does not depend on training
    assert set(claims["claim"]) == {text for text, *_ in enhancement.COLOUR.claims} and (claims["seeds"] == 2).all()
    assert dict(zip(claims["claim"], claims[f"verdict_seed{own_seed}"])) == m["claims"]
    first = claims[claims["metric"] == "ciede2000_oracle"].iloc[0]  # the seed mean of a difference is the mean difference
    assert first["diff_seed_mean"] == pytest.approx((first[f"diff_seed{own_seed}"] + first[f"diff_seed{own_seed + 1}"]) / 2)
    assert first["low_seed_mean"] <= first["diff_seed_mean"] <= first["high_seed_mean"]
    with pytest.raises(SystemExit, match="two different seeds"):
        seeds.main(["--root", str(proj), "--seeds", "1", "1"])
    in_dir(proj)
    fresh_claims, fresh = seeds.main(["--root", str(proj), "--seeds", str(own_seed), str(own_seed + 1), "--on", "confirm",
                                      "--count", "6", "--out", str(tmp_path / "confirm.csv")])
    in_dir(proj)
    assert (fresh["n"] == 6).all() and (rows["n"] == p.colour.num_test).all()
    assert set(fresh_claims["claim"]) == set(claims["claim"])  # fresh faces with oracles: the same claims
    assert fresh.set_index(["seed", "row"])["ciede2000_oracle"][own_seed, "gt"] != mean[own_seed, "gt"]  # other faces
    # a folder of real test GTs (colour.test_hq_folder, the paper profile's CelebA-Test): the same
    # degradations and gray copies, no pristine faces, so the claims compare with the GT instead
    real = tmp_path / "real_hq"
    real.mkdir()
    hq = sorted(Path("data/colour/testset/pairs/hq").glob("*.png"))
    for i, f in enumerate(hq):
        shutil.copy(f, real / f"face_{i}.png")
    (real / "broken.png").write_bytes(b"not an image")
    text = Path("params.yaml").read_text()
    Path("params.yaml").write_text(text.replace('test_hq_folder: ""', f"test_hq_folder: {real}")
                                   .replace("test_expected_count: 0 ", f"test_expected_count: {len(hq)} "))
    with pytest.warns(UserWarning, match="1 of .* rejected; see data/colour/testset/rejects.csv"):
        assert cli.main(["task", "colour", "world"]) == 0
    assert list(pd.read_csv("data/colour/testset/rejects.csv")["file"].map(lambda f: Path(f).name)) == ["broken.png"]
    pairs = pd.read_csv("data/colour/testset/pairs/manifest.csv")
    assert len(pairs) == len(hq) and "oracle_file" not in pairs and not Path("data/colour/testset/pairs/oracle").exists()
    for rec in pairs.to_dict("records"):  # gray/: the pairs' LQ in grayscale, beside the same GTs
        t = Path("data/colour/testset")
        assert np.array_equal(load_png(t / "gray" / rec["file"]), colour.gray(load_png(t / "pairs" / rec["file"])))
        assert np.array_equal(load_png(t / "gray" / rec["hq_file"]), load_png(t / "pairs" / rec["hq_file"]))
    assert json.loads(Path("reports/metrics/colour/world.json").read_text())["test"]["source"] == str(real)
    run("notebooks/06_colour.ipynb", "reports/06_colour.ipynb")
    r = json.loads(Path("reports/metrics/colour.json").read_text())
    assert np.isnan(r["baseline_plus"]["ciede2000_oracle"]) and np.isnan(r["baseline_plus"]["true_quality"])
    assert r["baseline_plus"]["ciede2000_gt"] > 0 and r["gt"]["ciede2000_gt"] == 0.0
    assert set(r["claims"]) == {text for text, *_ in enhancement.COLOUR.gt_claims}
    Path("params.yaml").write_text(Path("params.yaml").read_text().replace(str(real), str(tmp_path / "typo")))
    assert cli.main(["task", "colour", "world"]) == 2  # refused before anything is rendered
    assert "iqpfr task colour world: image folder" in capsys.readouterr().err
    assert len(pd.read_csv("data/colour/testset/pairs/manifest.csv")) == len(hq)  # the last test set is kept
    with pytest.raises(ValueError, match=f"holds {len(hq)} images; expected {len(hq) + 1}"), pytest.warns(UserWarning):
        colour.ingest_testset(tmp_path / "t", real, cp.data, DegradeRanges(), 0, expected=len(hq) + 1)
