"""Evaluation metrics on known cases, and the claim arithmetic."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from iqpfr import comparison, quality
from iqpfr import evaluate as ev
from iqpfr.synthfaces import render_face


def _face(seed: int, size: int = 64) -> np.ndarray:
    return render_face(seed, size).image.astype(np.float32)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(img, (0, 0), sigma)


def test_identical_images_hit_the_caps():
    x = _face(1)
    assert ev.psnr(x, x) == ev.PSNR_CAP == 100.0
    assert ev.ssim(x, x) == pytest.approx(1.0, abs=1e-6)


def test_more_blur_scores_worse():
    x = _face(2)
    p = [ev.psnr(_blur(x, s), x) for s in (0.7, 1.5, 3.0)]
    s = [ev.ssim(_blur(x, s), x) for s in (0.7, 1.5, 3.0)]
    assert p[0] > p[1] > p[2] and s[0] > s[1] > s[2]


def test_psnr_matches_its_definition_and_is_symmetric():
    x = _face(3)
    y = np.clip(x + 0.1, 0, 1)
    mse = np.mean((ev.to_grid(x) - ev.to_grid(y)) ** 2)
    assert ev.psnr(x, y) == pytest.approx(10 * np.log10(1 / mse)) == pytest.approx(ev.psnr(y, x))


def test_frechet_distance_with_a_stand_in_feature_network():
    """The FID arithmetic (torchmetrics) on a fixed random feature network: ~0 for a set against
    itself, larger for a blurred copy, and larger still for a stronger blur."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten()).eval()
    feature = lambda x: net(x.float() / 255 if x.dtype == torch.uint8 else x)  # noqa: E731
    module = torch.nn.Module()
    module.forward = feature
    module.num_features = 32
    faces = np.stack([_face(s, 32) for s in range(40)])
    real = torch.from_numpy(faces).permute(0, 3, 1, 2)
    blurred = [torch.from_numpy(np.stack([_blur(f, s) for f in faces])).permute(0, 3, 1, 2) for s in (1.0, 2.5)]
    same = ev.frechet_distance(real, real, module)
    d1, d2 = (ev.frechet_distance(real, b, module) for b in blurred)
    assert abs(same) < 1e-3 and d2 > d1 > 10 * abs(same) + 1e-4


def test_fid_and_lpips_without_weights_say_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(quality.MissingWeightsError, match=ev.INCEPTION_FILE):
        ev.frechet_distance(x, x)
    with pytest.raises(quality.MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        ev.Lpips("alex")


def test_identity_distance_is_zero_for_the_same_face_and_grows():
    identity = ev.Identity()
    a, b = _face(5, 128), _face(6, 128)
    assert identity.distance(a, a) == 0.0
    assert identity.distance(a, b) > identity.distance(a, _blur(a, 1.0)) > 0


def test_nr_directions_follow_the_metric():
    """PIQE is lower-is-better, S higher-is-better; the judges table says so."""
    judges = ev.Judges(quality.NormStats({}, []), {}, {"piqe": quality.make_metric("piqe")}, {})
    assert judges.directions() == {"S": "higher", "piqe": "lower"}
    clean, blurred = _face(7, 96), _blur(_face(7, 96), 3.0)
    x = torch.from_numpy(np.stack([clean, blurred])).permute(0, 3, 1, 2)
    piqe = judges.judges["piqe"](x).numpy()
    assert piqe[0] < piqe[1]  # the blurred copy is worse, i.e. higher PIQE


def test_paired_difference_and_verdicts():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, 200)
    up = ev.paired_difference(a + 0.05, a)
    assert up["low"] > 0 and up["mean"] == pytest.approx(0.05)
    assert ev.verdict(up, "higher") == "supported" and ev.verdict(up, "lower") == "contradicted"
    noise = ev.paired_difference(a + rng.normal(0, 0.1, 200), a)
    assert ev.verdict(noise, "higher") == "inconclusive"


def test_claims_table_skips_missing_rows_and_reads_directions():
    n = 50
    base = pd.DataFrame({"S": np.linspace(0.3, 0.6, n), "piqe": np.full(n, 40.0), "ssim_oracle": np.full(n, 0.5)})
    better = base.assign(S=base["S"] + 0.1, piqe=base["piqe"] - 5)
    claims = comparison.claims_table({"iqpfr": better, "baseline": base}, {"S": "higher", "piqe": "lower"})
    got = dict(zip(claims["claim"], claims["verdict"]))
    assert got["IQPFR restores higher prior quality than the baseline"] == "supported"
    assert got["Held-out piqe agrees: IQPFR beats the baseline"] == "supported"  # lower PIQE is better
    assert got["IQPFR is closer to the pristine face than the baseline"] == "inconclusive"
    assert set(claims["b"]) == {"baseline"}  # claims about absent rows are left out


def test_prior_agreement_per_row():
    x = np.linspace(0, 1, 20)
    tables = {"iqpfr": pd.DataFrame({"S": x, "ssim_oracle": x ** 2}),       # the prior ranks the outputs right
              "fooled": pd.DataFrame({"S": x, "ssim_oracle": 1 - x}),       # the prior ranks them backwards
              "lq": pd.DataFrame({"S": x})}                                 # no oracle: left out
    got = comparison.prior_agreement(tables)
    assert got == {"iqpfr": pytest.approx(1.0), "fooled": pytest.approx(-1.0)}


def test_seed_claims_need_every_seed():
    mk = lambda verdicts, diffs: pd.DataFrame({"claim": ["A", "B", "C"], "metric": "S", "verdict": verdicts,  # noqa: E731
                                               "diff": diffs})
    per_seed = {0: mk(["supported", "supported", "contradicted"], [0.1, 0.2, -0.1]),
                1: mk(["supported", "inconclusive", "contradicted"], [0.1, 0.01, -0.2]),
                2: mk(["supported", "supported", "contradicted"], [0.2, 0.1, -0.1]).iloc[:2]}  # C not retrained
    got = comparison.merge_seed_claims(per_seed).set_index("claim")
    assert got["verdict"].to_dict() == {"A": "supported", "B": "inconclusive", "C": "contradicted"}
    assert got.loc["B", "verdict_seed1"] == "inconclusive" and got.loc["A", "diff_seed2"] == 0.2
    assert got["seeds"].to_dict() == {"A": 3, "B": 3, "C": 2}


def test_seed_entries_follow_their_model():
    from pathlib import Path

    rows = ev.entries({"baseline": {}, "continuous": {}}, [0.0], Path("models/stage2/restorer.pt"), Path("models/variants"))
    got = {e.name: e.checkpoint for e in comparison.seed_entries(rows, 7, ["iqpfr", "continuous"])}
    assert got == {"lq": None, "iqpfr": Path("models/seeds/iqpfr/7/restorer.pt"),
                   "iqpfr_lambda0": Path("models/seeds/iqpfr/7/restorer.pt"),
                   "continuous": Path("models/seeds/continuous/7/restorer.pt"),
                   "continuous_latent": Path("models/seeds/continuous/7/restorer.pt")}  # baseline was not retrained


def test_entries_cover_variants_and_ablations():
    rows = ev.entries({"baseline": {}, "continuous": {}}, [0.0], Path("m/stage2.pt"), Path("m/variants"))
    names = [r.name for r in rows]
    assert names == ["lq", "baseline", "continuous", "iqpfr", "iqpfr_lambda0", "continuous_latent"]
    by = {r.name: r for r in rows}
    assert by["iqpfr_lambda0"].hq_weight == 0.0 and by["continuous_latent"].continuous
    assert by["baseline"].checkpoint == Path("m/variants/baseline/restorer.pt") and by["lq"].checkpoint is None


def test_comparison_table_marks_directions():
    t = comparison.comparison_table({"iqpfr": {"n": 3, "S": 0.9, "psnr_gt": 20.0, "piqe": 30.0}},
                                    {"S": "higher", "piqe": "lower"})
    assert list(t.columns) == ["S ↑", "psnr_gt ↑", "piqe ↓"]


class _Brightness(torch.nn.Module):
    def forward(self, x):
        return x.mean((1, 2, 3))


def _toy_judges() -> ev.Judges:
    stats = quality.NormStats({"bright": {"min": 0.0, "max": 1.0, "lower_better": False}}, ["bright"])
    prior = {"bright": quality.Metric("bright", False, "toy", _Brightness())}
    return ev.Judges(stats, prior, {"piqe": quality.make_metric("piqe", min_size=64)}, {})


def test_lq_only_sets_get_no_reference_metrics_only(tmp_path):
    """A real LQ folder has no GT and no oracle: its tables hold S and the judges, nothing else."""
    lq = torch.from_numpy(np.stack([_face(s, 32) for s in range(3)])).permute(0, 3, 1, 2)
    images = {"files": ["a.png", "b.png", "c.png"], "lq": lq}
    summaries, tables = ev.evaluate_set("wider", images, {"lq": lq, "iqpfr": lq.flip(3)}, _toy_judges(),
                                        out_dir=tmp_path, progress=lambda *_: None)
    assert list(tables["iqpfr"].columns) == ["file", "S", "piqe"]
    assert summaries["lq"]["S"] == pytest.approx(float(lq.mean((1, 2, 3)).mean()), abs=1e-6)
    assert (tmp_path / "wider" / "iqpfr.csv").exists() and (tmp_path / "wider" / "iqpfr.json").exists()


def test_pairs_with_oracle_get_both_references(tmp_path):
    gt = torch.from_numpy(np.stack([_face(s, 32) for s in range(3)])).permute(0, 3, 1, 2)
    images = {"files": ["a", "b", "c"], "lq": gt * 0.5, "gt": gt, "oracle": gt}
    summaries, tables = ev.evaluate_set("pairs", images, {"iqpfr": gt, "gt": gt}, _toy_judges(), out_dir=tmp_path,
                                        progress=lambda *_: None)
    assert summaries["iqpfr"]["psnr_gt"] == ev.PSNR_CAP and summaries["iqpfr"]["ssim_oracle"] == pytest.approx(1.0)
    assert "psnr_gt" not in tables["gt"] and "ssim_oracle" in tables["gt"]  # the GT is compared with its oracle only
