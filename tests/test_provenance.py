"""Benchmark outputs carry a provenance stamp; notebooks show them only where they measured this run."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from iqpfr import provenance
from iqpfr.config import load_params

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def params():
    return load_params(ROOT / "profiles" / "default.yaml")


def _table(tmp_path: Path) -> Path:
    out = tmp_path / "bench.csv"
    out.write_text("design,psnr\na,20.0\n")
    return out


def test_same_world_and_settings_is_shown_without_a_note(tmp_path, params):
    out = _table(tmp_path)
    provenance.write(out, params.data, provenance.sections_of(params), "python benchmarks/x.py")
    ok, why = provenance.verdict(out, params.data, {"vqgan": params.vqgan, "stage1": params.stage1})
    assert ok and "(" not in why.split(";")[0] and "python benchmarks/x.py" in why


def test_another_world_is_not_shown(tmp_path, params):
    """The cross-profile case: a file measured on 64 px synthetic faces, a run at 32 px or on a folder."""
    out = _table(tmp_path)
    provenance.write(out, params.data, provenance.sections_of(params), "python benchmarks/x.py")
    for other in (replace(params.data, resolution=32), replace(params.data, source="folder", folder="faces")):
        ok, why = provenance.verdict(out, other, {})
        assert not ok and "64 px" in why and ("32 px" in why or "faces at" in why)


def test_other_settings_are_shown_with_a_note_naming_them(tmp_path, params):
    out = _table(tmp_path)
    provenance.write(out, params.data, provenance.sections_of(params), "python benchmarks/x.py")
    longer = replace(params.stage1, steps=params.stage1.steps + 1)
    ok, why = provenance.verdict(out, params.data, {"vqgan": params.vqgan, "stage1": longer})
    assert ok and "`stage1`" in why and "`vqgan`" not in why


def test_missing_file_or_stamp_is_not_shown(tmp_path, params):
    out = tmp_path / "absent.csv"
    assert provenance.verdict(out, params.data, {}) == (False, "absent.csv not found")
    out = _table(tmp_path)
    ok, why = provenance.verdict(out, params.data, {})
    assert not ok and "no provenance stamp" in why


def test_changed_or_missing_model_is_not_shown(tmp_path, params):
    model = tmp_path / "models" / "m.pt"
    model.parent.mkdir()
    model.write_bytes(b"weights 1")
    out = _table(tmp_path)
    provenance.write(out, params.data, {}, "python benchmarks/x.py", models=["models/m.pt"], root=tmp_path)
    assert provenance.verdict(out, params.data, {}, root=tmp_path)[0]
    model.write_bytes(b"weights 2")  # retrained
    ok, why = provenance.verdict(out, params.data, {}, root=tmp_path)
    assert not ok and "models/m.pt" in why
    model.unlink()
    assert not provenance.verdict(out, params.data, {}, root=tmp_path)[0]


def test_merged_rows_mark_changed_sections_and_refuse_another_world(tmp_path, params):
    out = _table(tmp_path)
    provenance.write(out, params.data, provenance.sections_of(params), "python benchmarks/x.py --a")
    other = replace(params, stage1=replace(params.stage1, steps=7))
    provenance.write(out, other.data, provenance.sections_of(other), "python benchmarks/x.py --b", merged=True)
    stamp = json.loads(provenance.stamp_path(out).read_text())
    assert stamp["sections"]["stage1"] == provenance.MIXED and stamp["sections"]["vqgan"] != provenance.MIXED
    assert stamp["command"] == "python benchmarks/x.py --a; python benchmarks/x.py --b"
    provenance.write(out, other.data, provenance.sections_of(other), "python benchmarks/x.py --b", merged=True)
    assert json.loads(provenance.stamp_path(out).read_text())["command"] == stamp["command"]  # one design after another
    ok, why = provenance.verdict(out, params.data, {"stage1": params.stage1})
    assert ok and "several settings of `stage1`" in why
    with pytest.raises(ValueError, match="32 px"):
        provenance.require_world(out, replace(params.data, resolution=32))


def _names(entries) -> set[str]:
    return {next(iter(e)) if isinstance(e, dict) else str(e) for e in entries or []}


def test_benchmark_outputs_are_stamped_and_the_stages_that_read_them_depend_on_the_stamps(root):
    """Every file under reports/metrics/ that no stage writes (a benchmark's output) has its stamp in
    the repository, and every stamp describes such a file; a stage that reads one also depends on its
    stamp, so that DVC re-runs the notebook when either changes. The suite's bench*.json record the
    machine they measured inside the file (benchmarks/suite.py) and carry no stamp."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    written = set().union(*(_names(s.get(k)) for s in stages.values() for k in ("outs", "metrics", "plots")))
    read = {}
    for name, stage in stages.items():
        for d in map(str, stage.get("deps", [])):
            if d.startswith("reports/metrics/") and not d.endswith(provenance.SUFFIX) and d not in written:
                read[d] = (name, stage)
    assert "reports/metrics/stage1_design.csv" in read and "reports/metrics/prior_on_outputs.csv" in read
    for path, (name, stage) in read.items():
        stamp = root / f"{path}{provenance.SUFFIX}"
        assert stamp.exists(), f"{path} (read by {name}) has no provenance stamp"
        assert f"{path}{provenance.SUFFIX}" in map(str, stage["deps"]), f"{name} does not depend on {stamp.name}"
        assert json.loads(stamp.read_text())["world"]["resolution"] > 0
    stamps = {str(s.relative_to(root))[: -len(provenance.SUFFIX)] for s in (root / "reports/metrics").glob(f"*{provenance.SUFFIX}")}
    benchmark_outputs = {str(f.relative_to(root)) for f in (root / "reports/metrics").iterdir()
                         if f.is_file() and not f.name.endswith(provenance.SUFFIX) and not f.name.startswith("bench")
                         and str(f.relative_to(root)) not in written}
    assert "reports/metrics/guidance_holdout.csv" in benchmark_outputs  # one that no stage reads
    assert set(read) <= benchmark_outputs
    assert stamps == benchmark_outputs
