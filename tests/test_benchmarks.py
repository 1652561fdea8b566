"""The benchmark scripts keep working (they print figures; nothing here is timed)."""
from __future__ import annotations

import importlib.util

import pytest
import torch


def _benchmark(root, name: str):
    """The script benchmarks/<name>.py, imported as a module."""
    spec = importlib.util.spec_from_file_location(name, root / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_stage1_design_benchmark_runs_one_short_design(root, in_dir, tiny_project):
    """The script notebook 02 names: the default design, two steps, on the tiny project's world."""
    mod = _benchmark(root, "stage1_design")
    name = next(n for n in mod.DESIGNS if "(default)" in n)  # the design the default profile uses is measured
    in_dir(tiny_project)
    rows = mod.run(name, steps=2, every=1, params_path="params.yaml")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["psnr_holdout_lambda0"] < 100 and 0 < r["used_c_holdout"] <= 1 for r in rows)
    assert all(-1 <= r["spearman_true_quality_lambda0"] <= 1 for r in rows)  # the pipeline's keeps-quality figure
    assert all(0 < r["ceiling_true_quality"] <= 1 for r in rows)  # the pristine faces through stage I
    # a batch-8 design sees the same training images in twice the steps: curves compare by images
    from dataclasses import replace

    from iqpfr.config import load_params

    p = load_params("params.yaml")  # the tiny project has no scores: every gate open
    half = mod.run("default + HQ+ gate, batch 8", steps=2, every=1, params_path=replace(p, stage1=replace(p.stage1, gate="all")))
    assert [(r["step"], r["batch"], r["images"]) for r in half] == [(2, 8, 16), (4, 8, 32)]
    assert [r["images"] for r in rows] == [16, 32]


def test_stage1_design_puts_the_pipelines_gate_and_gan_back(root, in_dir, tiny_project):
    """The recipe designs train with the params' gates (here all open) and the GAN from step 800."""
    from dataclasses import replace

    from iqpfr.config import load_params

    mod = _benchmark(root, "stage1_design")
    in_dir(tiny_project)
    p = load_params("params.yaml")
    p = replace(p, stage1=replace(p.stage1, gate="all"))
    seen = {}
    real_init = mod.Stage1Trainer.__init__

    def spy(self, cfg, settings, images, gates, *args, **kwargs):
        seen.update(gates=gates.clone(), gan_start=settings.gan_start)
        real_init(self, cfg, settings, images, gates, *args, **kwargs)

    mod.Stage1Trainer.__init__ = spy
    try:
        rows = mod.run("default + HQ+ gate + GAN", steps=2, every=2, params_path=p, seed=3)
        assert bool((seen["gates"] == 1).all()) and seen["gan_start"] == 800
        mod.run("f4_512_encoder_init_restart (default)", steps=1, every=1, params_path=p)
        assert bool((seen["gates"] == 0).all()) and seen["gan_start"] > 10**6  # C alone, no GAN
    finally:
        mod.Stage1Trainer.__init__ = real_init
    assert [(r["step"], r["seed"]) for r in rows] == [(2, 3)]


def test_spectral_term_sees_energy_not_phase(root):
    """The experimental spectrum term is 0 for identical images and for tiles that only moved their
    content (a flipped tile keeps its amplitude spectrum), and positive when energy is lost (blur)."""
    mod = _benchmark(root, "stage1_design")
    term = mod.SpectralSSIM(None, 1.0, patch=8)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    tiles = x.unfold(2, 8, 8).unfold(3, 8, 8).flip(-1, -2)  # (B, 3, 2, 2, 8, 8), each tile flipped
    flipped = tiles.permute(0, 1, 2, 4, 3, 5).reshape(x.shape)
    assert not torch.equal(flipped, x)
    assert term(x, x).item() == 0.0
    assert term(flipped, x).item() < 1e-6
    blurred = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
    assert term(blurred, x).item() > 0.01


def _suite():
    from benchmarks import suite

    return suite


def test_restore_variants_report_speed_and_differences():
    """Every variant of a tiny restorer: faces/s, a ratio to fp32, and how far its output and its
    codes are from fp32's; fp32 against itself is exact, channels_last in fp32 nearly so."""
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    torch.manual_seed(0)
    v = VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), emb_dim=8,
                    codebook_size=16, disc_nf=8, disc_layers=1, fusion_heads=2)
    model = QualityRestorer(DualCodebookVQGAN(v), TransformerConfig(8, 8, 16, 1, 2, 16, 32)).eval()
    rows = _suite().restore_case(model, torch.rand(4, 3, 16, 16), batch=2, repeats=1, use_compile=False, trained=True)
    assert set(rows) == {"fp32", "fp32+channels_last", "bf16", "bf16+channels_last", "bf16-conv", "bf16-conv+channels_last"}
    assert rows["fp32"]["speedup"] == 1.0 and rows["fp32"]["max_abs_diff"] == 0.0 and rows["fp32"]["changed_codes"] == 0.0
    assert rows["fp32"]["within_tolerance"]
    assert rows["fp32+channels_last"]["max_abs_diff"] < 1e-4
    assert all(r["faces_per_s"] > 0 and 0 <= r["changed_codes"] <= 1 for r in rows.values())
    assert rows["bf16"]["within_tolerance"] == (rows["bf16"]["psnr_vs_fp32_db"] >= 40 and rows["bf16"]["changed_codes"] <= 0.01)


def test_paper_speedup_counts_only_variants_within_tolerance():
    results = {"paper_restore": {"variants": {"fp32": {"faces_per_s": 1.0}, "bf16": {"faces_per_s": 3.0},
                                              "fp32+channels_last": {"faces_per_s": 1.5}}},
               "default_restore": {"variants": {"bf16": {"within_tolerance": False},
                                                "fp32+channels_last": {"within_tolerance": True}}}}
    assert _suite().paper_speedup(results) == {"paper_512_speedup": 1.5, "paper_512_best_variant": "fp32+channels_last"}


def test_training_step_benchmark_runs(root, in_dir):
    out = _suite().run_step("stage2", "fp32", steps=1)
    assert out["seconds_per_step"] > 0 and out["peak_rss_gb"] > 0


def test_whole_photo_benchmark_restores_the_pasted_faces():
    out = _suite().photo_benchmark(640, 400, 2)
    assert out["faces_restored"] == 2, out
    assert out["peak_rss_above_model_gb"] >= 0 and out["seconds_per_face"] > 0


@pytest.mark.slow
def test_a_24_megapixel_photo_with_30_faces_stays_within_the_memory_bound():
    """The issue's bound: a 6000 x 4000 photo with 30 faces restores within 1.5 GB above the loaded
    model's own footprint."""
    out = _suite().photo_benchmark(6000, 4000, 30)
    print(out)
    assert out["faces_restored"] == 30, out
    assert out["peak_rss_above_model_gb"] < 1.5, out


def test_gpu_check_says_so_and_exits_0_without_a_gpu(root):
    import subprocess
    import sys

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run for real")
    out = subprocess.run(["bash", str(root / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                         env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0 and "no CUDA device" in out.stdout


def test_gpu_check_counts_flops_and_reports_achieved_rates_on_cpu():
    """The TFLOP/s arithmetic, run on the CPU with a tiny restorer (the figures themselves are the GPU's)."""
    from benchmarks import gpu_check
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    torch.manual_seed(0)
    v = VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(8,), emb_dim=8,
                    codebook_size=16, disc_nf=8, disc_layers=1, fusion_heads=2)
    model = QualityRestorer(DualCodebookVQGAN(v), TransformerConfig(8, 8, 16, 1, 2, 16, 32)).eval()
    lin = torch.nn.Linear(8, 4)
    assert gpu_check.count_flops(lin, torch.zeros(3, 8)) == 2 * 3 * 8 * 4
    out = gpu_check.achieved(model, torch.rand(2, 3, 16, 16), peak=100.0)
    assert set(out) == {"transformer", "generator"}
    assert all(v["gflops_per_call"] >= 0 and v["tflops"] > 0 and 0 < v["fraction_of_peak"] for v in out.values())
    assert gpu_check.device_peak("NVIDIA H200") == 989.0 and gpu_check.device_peak("Mystery GPU") is None


def test_scoring_benchmark_compares_batches_and_layouts_with_the_loop():
    """Each batched variant scores exactly what the per-image loop scores; the headline ratio is the
    configured batch size's."""
    import argparse

    res = _suite().case_scoring(argparse.Namespace(score_images=4, repeats=1, compile=False))
    learned = res["learned"]
    assert {"batch16", "batch32", f"batch{res['configured_batch']}", "batch32_channels_last"} <= set(learned)
    assert all(v["max_abs_diff_vs_loop"] < 1e-5 for k, v in learned.items() if k.startswith("batch") and isinstance(v, dict))
    assert learned["batched_speedup"] == learned[f"batch{res['configured_batch']}"]["speedup"]
    assert "channels_last" not in " ".join(res["niqe"])  # NIQE is measured in its own layout only
    assert all("seconds" in res[f"folder_scorer_{p}_process"] for p in (1, 2))


def test_guidance_rule_takes_the_smallest_w_within_both_reaches_and_cost(root):
    import pandas as pd

    mod = _benchmark(root, "guidance")
    t = pd.DataFrame({"guidance": [1.0, 2.0, 3.0, 4.0], "ssim_oracle_S0.95": [0.75, 0.749, 0.746, 0.74],
                      "reach": [0.02, 0.04, 0.058, 0.07]})
    assert mod.choose(t, reach=0.05, cost=0.005) == 3.0
    assert mod.choose(t, reach=0.05, cost=0.001) is None  # w = 3 costs 0.004: refused at a 0.001 budget
    assert mod.choose(t, reach=0.01, cost=0.005) == 1.0
    t["prior_reach"] = [0.08, 0.12, 0.16, 0.2]  # the prior's score must move too, where the table has it
    assert mod.choose(t, reach=0.01, cost=0.005, prior_reach=0.15) == 3.0
    assert mod.choose(t, reach=0.01, cost=0.005, prior_reach=0.25) is None


def test_guidance_sweep_measures_every_w_on_a_guided_model(root):
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    mod = _benchmark(root, "guidance")
    torch.manual_seed(0)
    v = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                    codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)
    cfg = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            null_bin=True)
    model = QualityRestorer(DualCodebookVQGAN(v), cfg).eval()
    torch.nn.init.normal_(model.transformer.score_map, std=0.5)
    lq, oracle = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    t = mod.sweep(model, lq, oracle, [1.0, 3.0])
    assert t["guidance"].tolist() == [1.0, 3.0]
    assert ((t.filter(like="ssim_oracle") > -1) & (t.filter(like="ssim_oracle") <= 1)).all().all()
    assert t["reach"].tolist() == pytest.approx((t["ssim_oracle_S0.95"] - t["ssim_oracle_S0.05"]).tolist())


def test_knob_diagnosis_reports_every_measure_of_a_group(root):
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    mod = _benchmark(root, "knob_diagnosis")
    torch.manual_seed(0)
    v = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                    codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)
    cfg = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32)
    model = QualityRestorer(DualCodebookVQGAN(v), cfg).eval()
    gts, oracle, lq = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    idx = torch.randint(0, 32, (3, 256))

    def true_quality(x, ref):
        return (1 - (x - ref).abs().mean((1, 2, 3))).numpy()

    row = mod.diagnose(model, gts, oracle, idx, idx, lq, true_quality)
    assert row["n"] == 3 and row["gt"] == pytest.approx(true_quality(gts, oracle).mean())
    assert {f"out_S{s}" for s in mod.SCORES} | {"acc_c_S0.05", "acc_c_S0.95", "target_decoded", "lq"} <= set(row)
    assert all(0 <= row[k] <= 1 for k in ("acc_c_S0.05", "acc_c_S0.95"))


def test_trend_only_design_drops_the_bins_own_maps_and_leaves_the_class_as_it_was(root):
    """benchmarks/score_embedding.py's "ordinal trend only": Emb[k] = c_k D for bins 0-9, "no score" keeps its map."""
    from iqpfr import transformer
    from iqpfr.transformer import NUM_BINS, TransformerConfig

    mod = _benchmark(root, "score_embedding")
    cfg = TransformerConfig(latent_size=4, emb_dim=8, codebook_size=16, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            null_bin=True, score_trend=True)
    torch.manual_seed(0)
    t = transformer.CodeTransformer(cfg)
    torch.nn.init.normal_(t.score_map_trend)
    torch.nn.init.normal_(t.score_map)
    z, bins = torch.randn(3, 8, 4, 4), torch.tensor([0, NUM_BINS - 1, NUM_BINS])
    with mod.trend_only():
        out = t.condition(z, bins)
    assert torch.allclose(out, z + torch.stack([-t.score_map_trend, t.score_map_trend, t.score_map[NUM_BINS]]), atol=1e-6)
    both = z + t.score_map[bins] + torch.stack([-t.score_map_trend, t.score_map_trend, 0 * t.score_map_trend])
    assert torch.allclose(t.condition(z, bins), both, atol=1e-6)  # restored: the package's table + trend
    assert mod.DESIGNS["table"] == (False, True)


def test_score_embedding_rows_of_a_rerun_replace_only_their_own_design_and_seed(root):
    import pandas as pd

    mod = _benchmark(root, "score_embedding")

    def rows(design, seed, reach):
        return pd.DataFrame({"design": design, "seed": seed, "guidance": [2.0, 1.0], "reach": reach})

    old = pd.concat([rows("table + ordinal trend", 0, 0.1), rows("table (pipeline)", 0, 0.2), rows("table", 1, 0.3)])
    merged = mod.merge(old, rows("table + ordinal trend", 0, 0.9))
    assert list(zip(merged["design"], merged["seed"], merged["guidance"])) == [
        ("table (pipeline)", 0, 1.0), ("table (pipeline)", 0, 2.0), ("table + ordinal trend", 0, 1.0),
        ("table + ordinal trend", 0, 2.0), ("table", 1, 1.0), ("table", 1, 2.0)]
    assert merged.loc[merged["design"] == "table + ordinal trend", "reach"].tolist() == [0.9, 0.9]
    assert merged.loc[merged["design"] == "table", "reach"].tolist() == [0.3, 0.3]
    assert mod.merge(None, rows("table", 1, 0.5))["guidance"].tolist() == [1.0, 2.0]


def test_colour_prior_benchmark_trains_as_the_pipeline_and_checks_it(root, tmp_path):
    """benchmarks/colour_prior.py: its training is reproducible, and `same_weights` tells the
    pipeline's checkpoint from a prior of another input_pool."""
    from types import SimpleNamespace

    from iqpfr import iqanet

    mod = _benchmark(root, "colour_prior")
    prior = SimpleNamespace(width=4, epochs=1, batch_size=8, lr=1e-3, seed=0)
    g = torch.Generator().manual_seed(0)
    x, q = torch.rand(16, 3, 32, 32, generator=g), torch.rand(16, generator=g)
    evals = {"val": (x[:8], q[:8].numpy()), "unseen": (x[8:], q[8:].numpy())}
    net, log, seconds = mod.train(prior, 2, x, q, evals)
    assert net.cfg.input_pool == 2 and len(log) == 1 and seconds > 0
    iqanet.save(tmp_path / "iqanet.pt", net, {})
    assert mod.same_weights(mod.train(prior, 2, x, q, evals)[0], tmp_path / "iqanet.pt") is True
    assert mod.same_weights(mod.train(prior, 1, x, q, evals)[0], tmp_path / "iqanet.pt") is False
    assert mod.same_weights(net, tmp_path / "none.pt") is None


def test_groupnorm_in_fp32_matches_in_fp32_and_normalises_in_fp32_under_bf16():
    gn = torch.nn.GroupNorm(4, 8)
    x = torch.randn(2, 8, 6, 6)
    ref = gn(x)
    original = torch.nn.GroupNorm.forward
    xb = x.bfloat16().requires_grad_()
    with _suite().groupnorm_in_fp32():
        assert torch.equal(gn(x), ref)  # fp32: what nn.GroupNorm computes
        with torch.autocast("cpu", torch.bfloat16):
            y = gn(xb)
    with torch.autocast("cpu", torch.bfloat16):
        plain = gn(xb)
    assert torch.nn.GroupNorm.forward is original  # put back
    assert y.dtype == plain.dtype == torch.bfloat16
    # the normalisation ran on an fp32 copy (so its backward runs in fp32), then cast back to bf16
    assert plain.grad_fn.name() == "NativeGroupNormBackward0"
    assert y.grad_fn.name() == "ToCopyBackward0"
    assert y.grad_fn.next_functions[0][0].name() == "NativeGroupNormBackward0"


def test_stage1_ceiling_splits_the_ceiling_from_the_dropped_flaws_and_measures_the_targets_reach(root, tmp_path, in_dir):
    """A reconstruction that keeps every flaw but caps each face at its ceiling ranks exactly as the
    what-if says; a flaw that is the change itself correlates with it fully."""
    import numpy as np

    mod = _benchmark(root, "stage1_ceiling")
    rng = np.random.default_rng(0)
    gt, ceiling = rng.uniform(0.1, 1.0, 200), rng.uniform(0.7, 0.9, 200)
    recon = np.minimum(gt, ceiling)
    out = mod.decomposition(gt, recon, ceiling, {"flaw": recon - gt, "other": rng.normal(size=200)}, (0.7, 0.9))
    assert out["spearman_gt_vs_recon"] == out["what_if_flaws_kept_capped_at_ceiling"] < 1
    assert out["share_of_gts_above_their_ceiling"] == round(float(np.mean(gt > ceiling)), 4) > 0
    assert out["gts_in_band"] == int(((gt >= 0.7) & (gt < 0.9)).sum())
    assert out["spearman_change_vs_flaw"]["flaw"] == 1.0 and abs(out["spearman_change_vs_flaw"]["other"]) < 0.3
    kept = mod.decomposition(gt, gt, np.ones(200), {}, (0.0, 1.0))  # no ceiling, every flaw kept
    assert kept["spearman_gt_vs_recon"] == kept["what_if_flaws_kept_capped_at_ceiling"] == 1.0
    import pandas as pd

    frame = pd.DataFrame({"bin": np.repeat(np.arange(10), 3), "S_gt": np.repeat(np.arange(10) / 10, 3)})
    frame["S_target"] = 0.7 + frame["S_gt"] / 5  # targets squeezed into a fifth of the GTs' spread
    frame["true_quality_gt"], frame["true_quality_target"] = frame["S_gt"], 0.5
    table, reach = mod.by_bin(frame)
    assert list(table.index) == list(range(10)) and (table["gts"] == 3).all()
    assert reach == {"reach_S_gt": 0.9, "reach_S_target": 0.18, "reach_true_quality_gt": 0.9, "reach_true_quality_target": 0.0}
    in_dir(tmp_path)
    with pytest.raises(SystemExit, match="dvc repro train_codebook"):
        mod.main([])


def test_grid_cost_times_each_part_on_both_grids(root):
    """Every part is timed on the grid it is asked for: 256 tokens at f = 4, 1024 at f = 2, the
    Transformer over every token or over 2 x 2 patches of them."""
    from iqpfr.config import load_params

    mod = _benchmark(root, "grid_cost")
    params = load_params(root / "profiles" / "default.yaml")
    rows = [mod.costs(params, mod.GRIDS[name], batch=1, repeats=1)
            for name in ("f = 4", "f = 2, no attention", "f = 2, no attention, patch 2")]
    assert [(r["tokens"], r["positions"]) for r in rows] == [(256, 256), (1024, 1024), (1024, 256)]
    assert all(r[k] > 0 for r in rows for k in ("encoder_s", "generator_s", "transformer_s"))


def test_stage2_length_snapshot_is_the_run_of_that_length(root, in_dir, tiny_project, tmp_path):
    """Stage II has no learning-rate schedule: the snapshot at step k restores exactly as a k-step
    run of the main model does; every row's derived columns follow from its measured ones."""
    from dataclasses import replace

    import pandas as pd

    from iqpfr import cli, conditioned, notebook
    from iqpfr.config import load_params
    from iqpfr.task import FACE

    mod = _benchmark(root, "stage2_length")
    in_dir(tiny_project)
    if not (tiny_project / "data/targets/targets.pt").exists():
        if not (tiny_project / "data/scores/train.csv").exists():
            notebook.run("notebooks/01_score_dataset.ipynb", "reports/01_score_dataset.ipynb", "params.yaml")
        assert cli.main(["train", "stage1"]) == 0 and cli.main(["stage", "latent_targets"]) == 0
    p = load_params("params.yaml")
    rows = mod.measure(p, steps=4, every=2, weights=[1.0, 2.0], count=4)
    assert [(r["step"], r["guidance"]) for r in rows] == [(2, 1.0), (2, 2.0), (4, 1.0), (4, 2.0)]
    for r in rows:
        assert r["reach"] == pytest.approx(r["ssim_oracle_S0.95"] - r["ssim_oracle_S0.05"])
        assert r["ssim_over_lq"] == pytest.approx(r["ssim_oracle_S0.95"] - r["lq_ssim_oracle"])
    conditioned.train_conditioned(p.data, p.degrade, p.vqgan, p.transformer, replace(p.stage2, steps=4),
                                  progress=lambda m: None, checkpoint=tmp_path / "four.pt", log_csv=tmp_path / "log.csv")
    model, _ = conditioned.load_restorer(tmp_path / "four.pt", FACE.stage1)
    plain = pd.DataFrame(mod.snapshot_rows(model, mod.load_pairs(4), [1.0, 2.0], 4, 0.0))
    measured = pd.DataFrame(rows[2:]).reset_index(drop=True)
    cols = ["ssim_oracle_S0.95", "ssim_oracle_S0.05", "psnr_gt_S0.95"]
    pd.testing.assert_frame_equal(measured[cols], plain[cols])
    with pytest.raises(ValueError, match="every must be"):
        mod.measure(p, steps=1, every=2, weights=[1.0])



def test_prior_attack_raises_the_priors_score_and_keeps_8_bit_snapshots(root):
    from iqpfr.iqanet import IqaNet, IqaNetConfig
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    mod = _benchmark(root, "prior_adversarial")
    torch.manual_seed(0)
    model = DualCodebookVQGAN(VQGANConfig(resolution=16, nf=8, ch_mult=(1, 2), attn_resolutions=(), emb_dim=8,
                                          codebook_size=16)).eval()
    prior = IqaNet(IqaNetConfig(width=8, mode="regression"))
    lq = torch.rand(6, 3, 16, 16)
    snaps = mod.attack(model, prior, lq, at=[1, 10], lr=0.05, batch=4)
    assert sorted(snaps) == [1, 10]
    for y in snaps.values():
        assert y.shape == lq.shape and torch.equal(y, torch.round(y * 255) / 255) and 0 <= y.min() <= y.max() <= 1
    with torch.no_grad():
        assert prior.score(snaps[10]).mean() > prior.score(snaps[1]).mean()  # ascent on the prior's score
    assert not any(p.requires_grad for p in prior.parameters())  # the attacked prior stays frozen


def test_prior_overoptimisation_designs_parse_and_ensembles_average(root):
    from iqpfr.config import load_params

    mod = _benchmark(root, "prior_overoptimisation")
    prior = load_params(root / "profiles" / "default.yaml").prior
    assert mod.parse_design("", prior) == ("pipeline", prior, 1, None)
    label, changed, members, hardening = mod.parse_design("input_pool=2,ensemble=3", prior)
    assert (label, changed.input_pool, members, hardening) == ("input_pool=2,ensemble=3", 2, 3, None)
    assert changed.width == prior.width and changed.seed == prior.seed  # only what was asked changes
    _, same, _, hardening = mod.parse_design("harden=3,harden_weight=0.5", prior)
    assert same == prior and (hardening.rounds, hardening.weight) == (3, 0.5)
    assert hardening.steps == type(hardening)().steps  # the other hardening settings keep their defaults
    for bad in ("widht=32", "harden_wieght=1", "harden=2,ensemble=3"):
        with pytest.raises(SystemExit, match="widht|wieght|not combined"):
            mod.parse_design(bad, prior)

    class Affine(torch.nn.Module):  # a stand-in prior: Q(x) = a * mean(x) + b
        def __init__(self, a: float, b: float):
            super().__init__()
            self.a, self.b = a, b

        def forward(self, x):
            return self.a * x.mean((1, 2, 3)) + self.b

    x = torch.rand(4, 3, 8, 8, requires_grad=True)
    q = mod.MeanQuality([Affine(1.0, 0.0), Affine(0.5, 0.2)])
    out = q(x)
    assert out.shape == (4,)
    torch.testing.assert_close(out, 0.75 * x.mean((1, 2, 3)) + 0.1)
    out.sum().backward()  # the quality loss needs the ensemble's gradient in the image
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.75 / (3 * 8 * 8)))


def test_prior_hardening_round_pushes_the_prior_up_and_labels_every_snapshot(root):
    """One hardening round on a tiny random helper: only the encoder moves, the prior's score of the
    snapshots rises along the fine-tuning, and every snapshot image carries its true quality."""
    import copy as copy_module
    from dataclasses import replace

    from iqpfr.config import load_params
    from iqpfr.vqgan import DualCodebookVQGAN, VQGANConfig

    mod = importlib.import_module("benchmarks.prior_hardening")  # a dataclass module: imported by name
    params = load_params(root / "profiles" / "default.yaml")
    torch.manual_seed(0)
    helper = DualCodebookVQGAN(VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                                           emb_dim=8, codebook_size=16, disc_nf=8, disc_layers=1, fusion_heads=2)).eval()
    before = copy_module.deepcopy(helper.state_dict())

    class Brightness(torch.nn.Module):  # a stand-in prior, fooled by bright images: Q(x) = mean(x)
        def forward(self, x):
            return x.mean((1, 2, 3))

    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5
    oracle = x.clone()
    h = replace(mod.Hardening(), steps=40, snapshots=2, per_snapshot=6, batch_size=4, lr=1e-2, weight=10.0)
    images, labels = mod.over_optimised(helper, Brightness(), x, oracle, params, h, seed=3, progress=lambda line: None)
    assert images.shape == (12, 3, 32, 32) and labels.shape == (12,)
    assert torch.equal(images, torch.round(images * 255) / 255) and 0 <= images.min() <= images.max() <= 1
    assert ((0 <= labels) & (labels <= 1)).all()
    assert images[6:].mean() > images[:6].mean()  # the later snapshot is pushed further up the prior
    for name, value in helper.state_dict().items():  # the helper handed in is left as it was
        assert torch.equal(value, before[name]), name
