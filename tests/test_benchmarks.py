"""The benchmark scripts keep working (they print figures; nothing here is timed)."""
from __future__ import annotations

import importlib.util


def test_stage1_benchmark_runs_on_tiny(root, in_dir):
    in_dir(root)
    spec = importlib.util.spec_from_file_location("bench_stage1", root / "benchmarks" / "bench_stage1.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.run_one("tiny", steps=1)
    assert out["resolution"] == 32 and out["seconds_per_step"] > 0 and out["peak_rss_gb"] > 0


def test_restore_benchmark_face_finding_runs(root):
    spec = importlib.util.spec_from_file_location("bench_restore", root / "benchmarks" / "bench_restore.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = mod.time_detection(repeats=1)
    assert set(out) == {"dlib+landmarks", "haar+landmarks", "haar+box"}
    assert all(v["ms_per_photo"] > 0 and v["faces"] == 1 for v in out.values())  # the astronaut has one face
