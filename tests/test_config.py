from __future__ import annotations

import copy
import re
import subprocess
import sys
from dataclasses import replace

import pytest
import yaml

from iqpfr.config import ConfigError, Params, build, load_params


def _raw(root, name="params.yaml"):
    return yaml.safe_load((root / name).read_text())


@pytest.mark.parametrize("name", ["params.yaml", "profiles/default.yaml", "profiles/tiny.yaml", "profiles/paper.yaml"])
def test_profiles_validate(root, name):
    p = load_params(root / name)
    assert isinstance(p, Params)


def test_params_is_default_profile(root):
    assert (root / "params.yaml").read_text() == (root / "profiles" / "default.yaml").read_text()


def test_profiles_share_every_key(root):
    def keys(d, prefix=""):
        return {prefix + k for k in d} | {x for k, v in d.items() if isinstance(v, dict) and k not in ("lq_folders", "expected_counts", "overrides")
                                          for x in keys(v, prefix + k + ".")}
    ref = keys(_raw(root))
    for name in ("profiles/tiny.yaml", "profiles/paper.yaml"):
        assert keys(_raw(root, name)) == ref, name


def test_unknown_key_is_named(root):
    raw = _raw(root)
    raw["scoring"]["treshold"] = raw["scoring"].pop("threshold")
    with pytest.raises(ConfigError, match=r"scoring\.treshold: unknown key; did you mean 'threshold'"):
        build(Params, raw)


def test_unknown_section_and_missing_key(root):
    raw = _raw(root)
    raw["stage9"] = {}
    with pytest.raises(ConfigError, match="stage9: unknown key"):
        build(Params, raw)
    raw = _raw(root)
    del raw["data"]["resolution"]
    with pytest.raises(ConfigError, match="data.resolution: missing"):
        build(Params, raw)


def test_mistyped_values_are_named(root):
    raw = _raw(root)
    bad = copy.deepcopy(raw)
    bad["prior"]["lr"] = "1e-3"  # what PyYAML makes of 1e-3
    with pytest.raises(ConfigError, match=r"prior\.lr: expected a number.*1\.0e-4"):
        build(Params, bad)
    bad = copy.deepcopy(raw)
    bad["data"]["resolution"] = 64.0
    with pytest.raises(ConfigError, match="data.resolution: expected an integer"):
        build(Params, bad)
    bad = copy.deepcopy(raw)
    bad["degrade"]["jpeg"] = [80, 30]
    with pytest.raises(ConfigError, match="degrade.jpeg"):
        build(Params, bad).validate()
    bad = copy.deepcopy(raw)
    bad["data"]["source"] = "ffhq"
    with pytest.raises(ConfigError, match="data.source"):
        build(Params, bad).validate()


@pytest.mark.parametrize("name", ["params.yaml", "profiles/tiny.yaml", "profiles/paper.yaml"])
def test_pyyaml_and_dvc_parsers_agree(root, name):
    from dvc.utils.serialize import parse_yaml

    text = (root / name).read_text()
    assert yaml.safe_load(text) == parse_yaml(text, name)


@pytest.mark.parametrize("name", ["params.yaml", "profiles/tiny.yaml", "profiles/paper.yaml"])
def test_floats_have_a_decimal_point(root, name):
    # 1e-4 style literals are strings to PyYAML: forbid them outright
    for line in (root / name).read_text().splitlines():
        value = line.split("#")[0]
        assert not re.search(r"(?<![\w.])\d+e[-+]?\d+", value), line


def _with_variant(root, overrides: dict) -> dict:
    raw = _raw(root)
    raw["variants"] = {"v": overrides}
    return raw


def test_variant_overrides_apply_only_what_they_name(root):
    from dataclasses import asdict

    from iqpfr.config import variant

    p = load_params(root / "params.yaml")
    assert set(p.variants) == {"baseline", "baseline_plus", "no_quality_loss", "continuous"}
    base = variant(p, "baseline")
    assert base.transformer.codebooks == "common" and base.transformer.conditioning == "none"
    assert base.stage2.quality_weight == 0.0
    # everything not overridden is the main model's: the comparison differs in one thing at a time
    assert asdict(base.stage2) | {"quality_weight": p.stage2.quality_weight} == asdict(p.stage2)
    assert base.vqgan == p.vqgan and base.data == p.data
    assert variant(p, "continuous").stage2.quality_mode == "continuous"


@pytest.mark.parametrize("overrides, message", [
    ({"stage2": {"quality_wieght": 0.0}},
     r"variants\.v\.stage2\.quality_wieght: unknown key; did you mean 'quality_weight'"),
    ({"stage1": {"steps": 3}}, r"variants\.v\.stage1: a variant may override only"),
    ({"transformer": {"codebooks": "triple"}}, r"variants\.v: transformer\.codebooks: 'triple' is not one of"),
    ({"stage2": {"steps": "many"}}, r"variants\.v\.stage2\.steps: expected an integer"),
    ({"stage2": 3}, r"variants\.v\.stage2: expected a mapping"),
])
def test_bad_variant_is_named(root, overrides, message):
    raw = _with_variant(root, overrides)
    with pytest.raises(ConfigError, match=message):
        build(Params, raw).validate()


def test_unknown_variant_name(root):
    from iqpfr.config import variant

    with pytest.raises(ConfigError, match=r"variants\.nope: no such variant"):
        variant(load_params(root / "params.yaml"), "nope")


def _validated(raw):
    build(Params, raw).validate()


def test_seeds_rows_must_be_trained_rows(root):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["seeds"]["rows"] = ["iqpfr", "basline"]
    with pytest.raises(ConfigError, match="seeds.rows: 'basline'"):
        _validated(raw)
    raw["seeds"]["rows"], raw["seeds"]["extra"] = ["iqpfr"], [0, 1]
    with pytest.raises(ConfigError, match="stage2.seed"):
        _validated(raw)


def test_seed_params_shorten_and_reseed(root):
    from iqpfr.conditioned import seed_params

    p = load_params(root / "params.yaml")
    q = seed_params(p, "no_quality_loss", 2)
    assert q.stage2.seed == 2 and q.stage2.steps == p.seeds.steps and q.stage2.quality_weight == 0.0
    r = seed_params(p, "iqpfr", 1)
    assert r.stage2.quality_start == round(p.stage2.quality_start * p.seeds.steps / p.stage2.steps)
    assert r.transformer == p.transformer


@pytest.mark.parametrize("decay", [0.0, 0.9, 0.995])
def test_seed_params_scale_the_ema_to_the_same_fractions_of_training(root, decay):
    from iqpfr.conditioned import seed_params

    p = load_params(root / "params.yaml")
    p = replace(p, stage2=replace(p.stage2, ema_decay=decay, steps=500), seeds=replace(p.seeds, steps=100))
    d = seed_params(p, "iqpfr", 1).stage2.ema_decay
    if decay == 0.0:
        assert d == 0.0  # raw weights stay raw
    else:
        assert 0.0 < d < decay
        assert d ** 100 == pytest.approx(decay ** 500, rel=1e-9)  # the step-1 weights keep the same share


@pytest.mark.parametrize("edit, message", [
    (("stage1", "steps", -5), r"stage1\.steps: -5 is outside \[1, "),
    (("stage2", "lr", 0.0), r"stage2\.lr: 0\.0 is outside \(0, 10\]"),
    (("stage1", "betas", [0.9, 1.0]), r"stage1\.betas\[1\]: 1\.0 is outside \[0, 1\)"),
    (("scoring", "threshold", 1.0), r"scoring\.threshold: 1\.0 is outside \(0\.0, 1\.0\)"),
    (("scoring", "threshold", 0.0), r"scoring\.threshold: 0\.0 is outside \(0\.0, 1\.0\)"),
    (("data", "resolution", 63), r"data\.resolution: 63 is not divisible by 2, the downsampling factor"),
    (("data", "resolution", 62), r"transformer\.patch: 2 does not divide the 31 x 31 latent"),
    (("transformer", "patch", 0), r"transformer\.patch: 0 is outside \[1, 64\]"),
    (("stage1", "batch_size", 5000), r"stage1\.batch_size: 5000 is larger than the 1500 training images .*allowed: \[1, 1500\]"),
    (("stage2", "checkpoint_every", 0), r"stage2\.checkpoint_every: 0 is outside \[1, "),
    (("transformer", "dropout", 1.0), r"transformer\.dropout: 1\.0 is outside"),
])
def test_out_of_range_values_name_the_key_and_the_range(root, edit, message):
    raw = _raw(root)
    sec, key, value = edit
    raw[sec][key] = value
    p = None
    with pytest.raises(ConfigError, match=message):
        p = build(Params, raw)
        p.validate()


def test_a_task_override_is_checked_against_the_shared_sections(root):
    raw = _raw(root)
    raw["underwater"]["overrides"]["data"]["resolution"] = 33
    with pytest.raises(ConfigError, match=r"data\.resolution: 33 is not divisible by 2.* \(in underwater\)"):
        build(Params, raw).validate()
    raw = _raw(root)
    for pool in (3, 8):  # 64 px: 3 does not divide it, 8 leaves 8 px for four stages
        raw["colour"]["overrides"]["prior"]["input_pool"] = pool
        with pytest.raises(ConfigError, match=rf"prior\.input_pool: {pool} does not divide data\.resolution 64 into an "
                                              r"image of at least 16 px.*\(in colour\)"):
            build(Params, raw).validate()
    raw = _raw(root)
    raw["colour"]["overrides"]["data"] = {"resolution": 128}
    with pytest.raises(ConfigError, match=r"colour\.overrides\.data\.resolution: the colour task reads the face task's stage I"):
        build(Params, raw).validate()


@pytest.mark.parametrize("edit, message", [
    ({"guidance": 2.0, "score_dropout": 0.0}, r"transformer\.guidance: guidance needs .*score_dropout > 0"),
    ({"conditioning": "none", "score_dropout": 0.1, "guidance": 1.0}, r"transformer\.score_dropout: an unconditioned model"),
    ({"score_dropout": 1.0}, r"transformer\.score_dropout: 1\.0 is outside"),
    ({"conditioning": "none", "score_dropout": 0.0, "guidance": 1.0, "score_trend": True},
     r"transformer\.score_trend: a trend of the additive embedding needs conditioning add, got 'none'"),
    ({"conditioning": "adaln", "score_trend": True}, r"transformer\.score_trend: .*got 'adaln'"),
])
def test_guidance_settings_are_checked(root, edit, message):
    raw = _raw(root)
    raw["transformer"].update(edit)
    with pytest.raises(ConfigError, match=message):
        build(Params, raw).validate()


def test_guidance_by_row_applies_each_variants_overrides(root):
    from iqpfr.config import guidance_by_row, variant

    p = load_params(root / "params.yaml")
    g = guidance_by_row(p.transformer, p.variants)
    assert set(g) == {"iqpfr", *p.variants}
    assert g["iqpfr"] == p.transformer.guidance
    assert all(g[name] == variant(p, name).transformer.guidance for name in p.variants)


def test_colour_finetune_names_colour_rows_and_trained_face_rows(root):
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["colour"]["finetune"] = {"main": "basline_plus"}
    with pytest.raises(ConfigError, match="colour.finetune.main: 'basline_plus' is neither 'iqpfr' nor a variant"):
        _validated(raw)
    raw["colour"]["finetune"] = {"baseline_plus": "baseline_plus"}
    with pytest.raises(ConfigError, match="colour.finetune.baseline_plus: the colour rows are 'main' and 'baseline'"):
        _validated(raw)
    raw["colour"]["finetune"] = {"main": "iqpfr"}
    _validated(raw)  # the face main model is a trained face row too


def test_water_types_are_the_underwater_modules_table():
    from iqpfr import config, underwater

    assert config.WATER_TYPES == tuple(underwater.JERLOV)


def test_validating_params_imports_no_numerical_library(root):
    """A notebook stage's runner validates params.yaml before its kernel starts: that must not
    pay for torch, pandas or scikit-image (1.7 s a stage), which only the kernel uses."""
    code = ("import sys; from iqpfr.config import load_params; load_params('params.yaml'); "
            "print(sorted(m for m in ('torch', 'pandas', 'skimage', 'cv2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
