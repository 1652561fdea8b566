"""Pipeline consistency: dvc.yaml against the code, clean notebooks, environment files."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nbformat
import pytest
import tomllib
import yaml

from iqpfr.cli import STAGES, TASK_STAGES, TASK_WORLDS, VARIANT_SECTIONS
from iqpfr.notebook import parameter_names
from iqpfr.task import get as get_task


@pytest.fixture(scope="module")
def dvc_stages(root):
    return yaml.safe_load((root / "dvc.yaml").read_text())["stages"]


def test_cli_stages_list_exactly_their_sections(dvc_stages):
    for name, (_, sections) in STAGES.items():
        stage = dvc_stages[name]
        assert stage["cmd"] == f"iqpfr stage {name}"
        assert sorted(stage["params"]) == sorted(sections), name


def test_notebook_stages_list_exactly_their_parameters(root, dvc_stages):
    notebook_stages = {n: s for n, s in dvc_stages.items() if "iqpfr.notebook" in s.get("cmd", "")}
    assert notebook_stages, "no notebook stage found"
    for name, stage in notebook_stages.items():
        m = re.fullmatch(r"python -m iqpfr\.notebook (\S+\.ipynb) (reports/\S+\.ipynb)", stage["cmd"])
        assert m, stage["cmd"]
        src, dst = m.groups()
        assert sorted(stage["params"]) == sorted(parameter_names(root / src)), name
        assert src in stage["deps"]
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage["outs"]]
        assert dst in outs


def test_a_notebook_kernel_does_not_import_nbformat(root):
    # every notebook's first cell imports iqpfr.notebook for `sections`; nbformat (about 1 s of
    # start-up through jsonschema) belongs to the runner only
    code = "import sys, iqpfr.notebook; print(sorted(m for m in ('nbformat', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_runner_still_validates_notebooks(root):
    # the runner marks rfc3987_syntax absent before nbformat loads: notebooks must still be checked
    code = """
import sys
from iqpfr import notebook
notebook.skip_iri_grammar()
import nbformat
assert sys.modules["rfc3987_syntax"] is None
nb = nbformat.read("notebooks/02_train_codebook.ipynb", as_version=4)
nbformat.validate(nb)
nb.cells[0]["cell_type"] = "nonsense"
try:
    nbformat.validate(nb)
except nbformat.ValidationError:
    print("invalid notebook caught")
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "invalid notebook caught"


def test_every_stage_is_covered(dvc_stages):
    unknown = [n for n, s in dvc_stages.items()
               if n not in STAGES and "iqpfr.notebook" not in s.get("cmd", "") and n not in ("train_variant", "train_seed")
               and not s.get("cmd", "").startswith("iqpfr task ")]
    assert not unknown


def test_task_stages_list_exactly_their_sections(dvc_stages):
    """`iqpfr task T STAGE` reads the stage's sections with T's overrides applied: it lists T too."""
    task_cmds = {s["cmd"]: (n, s) for n, s in dvc_stages.items() if s.get("cmd", "").startswith("iqpfr task ")}
    for task, (_, world_sections) in TASK_WORLDS.items():
        _, stage = task_cmds[f"iqpfr task {task} world"]
        assert sorted(stage["params"]) == sorted(world_sections)
        for name, (_, sections) in TASK_STAGES.items():
            if name == "stage1" and get_task(task).shared_stage1 is not None:  # reads another task's stage I
                assert f"iqpfr task {task} stage1" not in task_cmds
                continue
            _, stage = task_cmds[f"iqpfr task {task} {name}"]
            assert sorted(stage["params"]) == sorted([*sections, task]), name
        _, stage = task_cmds[f"iqpfr task {task} variant"]
        assert sorted(stage["params"]) == sorted([*VARIANT_SECTIONS, task, "variants"])


def test_variant_stage_expands_the_params_variants(dvc_stages, root):
    """train_variant is a foreach over params.yaml `variants`, reading the CLI's sections plus its own entry."""
    stage = dvc_stages["train_variant"]
    assert stage["foreach"] == "${variants}" and stage["do"]["cmd"] == "iqpfr variant ${key}"
    assert sorted(stage["do"]["params"]) == sorted([*VARIANT_SECTIONS, "variants.${key}"])
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["variants"], "the default profile compares variants"
    evaluate = dvc_stages["evaluate"]
    assert "models/variants" in evaluate["deps"] and "models/stage2" in evaluate["deps"]


def test_seed_stage_is_a_matrix_over_the_seeds_section(dvc_stages):
    """train_seed trains every (row, seed) of params.yaml `seeds`; the evaluation reads their models."""
    stage = dvc_stages["train_seed"]
    assert stage["matrix"] == {"row": "${seeds.rows}", "seed": "${seeds.extra}"}
    assert stage["cmd"] == "iqpfr seed ${item.row} ${item.seed}"
    assert sorted(stage["params"]) == sorted([*VARIANT_SECTIONS, "seeds", "variants"])
    assert "models/seeds" in dvc_stages["evaluate"]["deps"] and "seeds" in dvc_stages["evaluate"]["params"]


def test_no_stage_depends_on_an_executed_notebook(dvc_stages):
    for name, stage in dvc_stages.items():
        assert not any(str(d).startswith("reports/") and str(d).endswith(".ipynb") for d in stage.get("deps", [])), name


def test_source_notebooks_are_clean(root):
    for path in sorted((root / "notebooks").glob("*.ipynb")):
        raw = json.loads(path.read_text())  # as stored: nbformat.read would fill in missing cell ids
        ids = [cell.get("id") for cell in raw["cells"]]
        assert None not in ids and len(set(ids)) == len(ids), f"{path.name}: every cell needs its own id"
        nb = nbformat.read(str(path), as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, path.name
        assert nb.metadata["kernelspec"]["name"] == "python3"


def test_environment_yml_agrees_with_pyproject(root):
    env = yaml.safe_load((root / "environment.yml").read_text())
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    python = [d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python")]
    assert python == ["python=3.11"]
    assert "3.11" in project["requires-python"] and "<3.12" in project["requires-python"]
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert any(p.startswith("-e .") for p in pip), "environment.yml must install the project itself"
    pinned = {d for d in project["dependencies"] if re.search(r"[=<>]", d)}
    for pin in pinned:  # conda users get the same pins (torch, torchvision, opencv, setuptools)
        assert pin in pip, pin


def test_readme_starts_with_two_commands(root):
    text = (root / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    assert "dvc repro" in blocks[0]
    assert "pytest" in blocks[1]
    ci = (root / ".ci" / "run").read_text()
    assert "pytest" in ci


def test_a_set_aside_checkpoint_is_not_part_of_its_output(root, tmp_path):
    """A checkpoint whose settings or code differ is renamed beside the new run's (resume_or_restart);
    .dvcignore keeps that file out of the output's hash and the DVC cache, so an output is what its
    stage's inputs produce, whatever earlier runs left on disk."""
    from iqpfr.train import Dist, resume_or_restart

    class Incompatible:
        d = Dist()

        def resume(self, path):
            raise ValueError("other settings")

    ckpt = tmp_path / "models" / "stage2" / "restorer.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"an older run")
    resume_or_restart(Incompatible, ckpt, progress=lambda msg: None)
    (aside,) = ckpt.parent.iterdir()
    assert aside.read_bytes() == b"an older run" and not ckpt.exists()
    rel = aside.relative_to(tmp_path)  # the same place in this repository
    run = subprocess.run([sys.executable, "-m", "dvc", "check-ignore", str(rel), str(rel.with_name(ckpt.name))],
                         cwd=root, capture_output=True, text=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert run.stdout.split() == [str(rel)]  # the set-aside file is ignored, the checkpoint is not
