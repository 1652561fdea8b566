"""The folder data source end to end on the tiny profile: a user's own aligned faces, with a
few bad files among them, through ingestion, the ranking-trained prior, test sets and scoring."""
from __future__ import annotations

import json
import shutil

import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from iqpfr import cli, notebook
from iqpfr.synthfaces import render_face


@pytest.fixture(scope="module")
def folder_project(tmp_path_factory, root):
    proj = tmp_path_factory.mktemp("folder")
    faces = proj / "my_faces"
    faces.mkdir()
    for i in range(20):  # varied sizes and modes, as a user's folder would be
        img = (render_face([99, i], 48 + 8 * (i % 3)).image * 255).astype(np.uint8)
        im = Image.fromarray(img)
        (im.convert("L") if i == 3 else im).save(faces / f"face_{i:02d}.{'jpg' if i % 4 == 0 else 'png'}")
    (faces / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    params = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    params["data"].update(source="folder", folder=str(faces), num_holdout=4)
    params["testset"].update(lq_folders={"mine": str(faces)}, expected_counts={"mine": 20})
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    shutil.copytree(root / "notebooks", proj / "notebooks")
    return proj


def test_folder_pipeline(folder_project, in_dir):
    in_dir(folder_project)
    for stage in ("world", "iqa_data", "train_prior", "testset"):
        assert cli.main(["stage", stage]) == 0, stage
    train = pd.read_csv("data/world/train/manifest.csv")
    rejects = pd.concat([pd.read_csv(f"data/world/{s}/rejects.csv") for s in ("train", "holdout")])
    assert len(train) + len(pd.read_csv("data/world/holdout/manifest.csv")) + len(rejects) == 21
    assert list(rejects["file"].str.rsplit("/", n=1).str[-1]) == ["broken.png"]
    prior = json.loads(open("reports/metrics/train_prior.json").read())
    assert prior["mode"] == "ranking" and {"rank_spearman_blur", "rank_spearman_noise"} <= set(prior)
    assert json.loads(open("reports/metrics/testset.json").read())["mine"] == {"count": 20, "rejected": 1}
    notebook.run("notebooks/01_score_dataset.ipynb", "reports/01_score_dataset.ipynb", "params.yaml")
    nb = nbformat.read("reports/01_score_dataset.ipynb", as_version=4)
    assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    scores = pd.read_csv("data/scores/train.csv")
    assert scores["S"].between(0, 1).all() and "true_quality" not in scores


def test_wrong_expected_count_fails(folder_project, in_dir):
    in_dir(folder_project)
    params = yaml.safe_load(open("params.yaml"))
    params["testset"]["expected_counts"] = {"mine": 407}
    open("params.yaml", "w").write(yaml.safe_dump(params))
    with pytest.raises(ValueError, match="holds 20 images; expected 407"):
        cli.main(["stage", "testset"])


def test_params_error_exit_code(tmp_path, in_dir, root, capsys):
    in_dir(tmp_path)
    params = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    params["data"]["resolutoin"] = 64
    open("params.yaml", "w").write(yaml.safe_dump(params))
    assert cli.main(["stage", "world"]) == 2
    assert "data.resolutoin: unknown key; did you mean 'resolution'" in capsys.readouterr().err


def test_hq_folder_test_pairs(folder_project, in_dir):
    # the paper profile's face test set: HQ faces from a folder (CelebA-Test), degraded with the seed
    in_dir(folder_project)
    original = open("params.yaml").read()
    params = yaml.safe_load(original)
    params["testset"].update(hq_folder="my_faces", lq_folders={}, expected_counts={"pairs": 20})
    open("params.yaml", "w").write(yaml.safe_dump(params))
    try:
        with pytest.warns(UserWarning, match="1 of 21 files .* rejected; see data/testset/pairs/rejects.csv"):
            assert cli.main(["stage", "testset"]) == 0
        pairs = pd.read_csv("data/testset/pairs/manifest.csv")
        assert len(pairs) == 20 and "oracle_file" not in pairs and "true_quality" not in pairs
        rejects = pd.read_csv("data/testset/pairs/rejects.csv")  # kept: the ingest folder itself is gone
        assert list(rejects["file"].str.rsplit("/", n=1).str[-1]) == ["broken.png"]
        assert not (folder_project / "data/testset/_hq_ingest").exists()
        assert json.loads(open("reports/metrics/testset.json").read())["pairs"] == {"count": 20, "rejected": 1}
        params["testset"]["hq_folder"] = "my_facse"  # a typo is refused before the last test set is removed
        open("params.yaml", "w").write(yaml.safe_dump(params))
        assert cli.main(["stage", "testset"]) == 2
        assert len(pd.read_csv("data/testset/pairs/manifest.csv")) == 20
    finally:
        open("params.yaml", "w").write(original)


def test_missing_input_folder_exit_code(tmp_path, in_dir, root, capsys):
    # e.g. the paper profile before FFHQ is in data/external/ffhq: one line naming the folder, no traceback
    in_dir(tmp_path)
    params = yaml.safe_load((root / "profiles" / "tiny.yaml").read_text())
    params["data"].update(source="folder", folder="data/external/ffhq")
    open("params.yaml", "w").write(yaml.safe_dump(params))
    assert cli.main(["stage", "world"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "iqpfr stage world: image folder data/external/ffhq does not exist"


def test_folder_world_and_folder_test_set_through_the_evaluation(folder_project, tmp_path, in_dir):
    # the paper profile's shape (FFHQ folder, CelebA-Test folder, helper off) minus pyiqa's weights:
    # stage I, stage II, the variants, the seeds and notebook 04 on data without pristine faces
    from iqpfr.config import load_params

    proj = tmp_path / "paper_shape"
    shutil.copytree(folder_project, proj, ignore=shutil.ignore_patterns("data", "models", "reports", "cache"))
    params = yaml.safe_load((proj / "params.yaml").read_text())
    params["helper"]["steps"] = 0
    params["testset"].update(hq_folder="my_faces", lq_folders={}, expected_counts={"pairs": 20})
    (proj / "params.yaml").write_text(yaml.safe_dump(params))
    in_dir(proj)
    with pytest.warns(UserWarning):
        for stage in ("world", "iqa_data", "iqa_helper", "train_prior", "testset"):
            assert cli.main(["stage", stage]) == 0, stage
    for name in ("01_score_dataset", "02_train_codebook"):
        notebook.run(f"notebooks/{name}.ipynb", f"reports/{name}.ipynb", "params.yaml")
    assert cli.main(["stage", "latent_targets"]) == 0
    notebook.run("notebooks/03_train_conditioned.ipynb", "reports/03_train_conditioned.ipynb", "params.yaml")
    p = load_params("params.yaml")
    for name in p.variants:
        assert cli.main(["variant", name]) == 0
    for row in p.seeds.rows:
        for seed in p.seeds.extra:
            assert cli.main(["seed", row, str(seed)]) == 0
    notebook.run("notebooks/04_evaluate.ipynb", "reports/04_evaluate.ipynb", "params.yaml")
    for name in ("01_score_dataset", "02_train_codebook", "03_train_conditioned", "04_evaluate"):
        nb = nbformat.read(f"reports/{name}.ipynb", as_version=4)
        assert not [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"], name
    stage1 = json.loads(open("reports/metrics/train_codebook.json").read())
    assert np.isfinite(stage1["psnr_lambda_holdout"]) and "spearman_true_quality_gt_vs_recon" not in stage1
    summary = json.loads(open("reports/metrics/evaluate.json").read())
    assert summary["pairs"]["lq"]["n"] == 20 and summary["prior_spearman_on_outputs"] is None
    assert all("ssim_oracle" not in row for row in summary["pairs"].values() if isinstance(row, dict))
