"""The benchmark scripts keep working (they print figures; nothing here is timed)."""
from __future__ import annotations

import importlib.util


def test_stage1_benchmark_runs_on_tiny(root, in_dir):
    in_dir(root)
    spec = importlib.util.spec_from_file_location("bench_stage1", root / "benchmarks" / "bench_stage1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    for prec in ("fp32", "bf16"):
        out = mod.run_one("tiny", steps=1, precision=prec)
        assert out["resolution"] == 32 and out["seconds_per_step"] > 0 and out["peak_rss_gb"] > 0
        assert out["precision"] == prec


def test_stage1_design_benchmark_runs_one_short_design(root, in_dir, tiny_project):
    """The script notebook 02 names: the default design, two steps, on the tiny project's world."""
    spec = importlib.util.spec_from_file_location("stage1_design", root / "benchmarks" / "stage1_design.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    name = next(n for n in mod.DESIGNS if "(default)" in n)  # the design the default profile uses is measured
    in_dir(tiny_project)
    rows = mod.run(name, steps=2, every=1, params_path="params.yaml")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0 < r["psnr_holdout_lambda0"] < 100 and 0 < r["used_c_holdout"] <= 1 for r in rows)


def test_restore_benchmark_face_finding_runs(root):
    spec = importlib.util.spec_from_file_location("bench_restore", root / "benchmarks" / "bench_restore.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.time_detection(repeats=1)
    assert set(out) == {"dlib+landmarks", "haar+landmarks", "haar+box"}
    assert all(v["ms_per_photo"] > 0 and v["faces"] == 1 for v in out.values())  # the astronaut has one face
