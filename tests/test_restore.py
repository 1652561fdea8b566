"""`iqpfr restore` and its Python API on tiny checkpoints the test trains for one step."""
from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from PIL import Image

from iqpfr import cli, restore, safeload
from iqpfr.conditioned import DegradedLQ, Stage2Settings, Stage2Trainer, load_restorer
from iqpfr.degrade import PRESETS
from iqpfr.synthfaces import render_face
from iqpfr.train import Stage1Settings, Stage1Trainer, load_stage1_model
from iqpfr.transformer import QualityRestorer, TransformerConfig
from iqpfr.vqgan import VQGANConfig

V = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)
T = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    imgs = torch.utils.data.TensorDataset(torch.rand(4, 3, 32, 32), torch.arange(4))
    Stage1Trainer(V, Stage1Settings(steps=1, batch_size=2, lr=1e-3, gan_start=10**9), imgs, torch.ones(4)).train(
        checkpoint=d / "s1.pt")
    model1, _ = load_stage1_model(d / "s1.pt")
    targets = {"idx_c": torch.randint(0, 32, (4, 2, 16, 16)), "idx_h": torch.randint(0, 32, (4, 2, 16, 16))}
    Stage2Trainer(QualityRestorer(model1, T), Stage2Settings(steps=1, batch_size=2, lr=1e-3), imgs, targets,
                  torch.rand(4), DegradedLQ(PRESETS["mild"])).train(checkpoint=d / "s2.pt")
    return d / "s2.pt", d / "s1.pt"


@pytest.fixture(scope="module")
def model(ckpts):
    return load_restorer(*ckpts)[0]


def _faces_folder(path):
    path.mkdir()
    for i in range(3):
        Image.fromarray((render_face([5, i], 48).image * 255).astype(np.uint8)).save(path / f"face{i}.png")
    Image.fromarray((render_face([5, 9], 40).image[..., 0] * 255).astype(np.uint8)).save(path / "gray.png")
    Image.fromarray((render_face([5, 8], 40).image[..., 0] * 65535).astype(np.uint16)).save(path / "deep16.png")
    (path / "junk.png").write_bytes(b"not a png")
    (path / "notes.txt").write_text("hello")


def test_aligned_folder_with_bad_files(ckpts, tmp_path, capsys):
    _faces_folder(tmp_path / "in")
    code = cli.main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aligned",
                     "--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1]), "--save-comparison"])
    out = capsys.readouterr().out
    assert code == 1  # some inputs failed
    assert "restored 5, skipped 2" in out and "junk.png" in out and "notes.txt" in out
    for name in ("face0", "gray", "deep16"):
        assert (tmp_path / "out" / f"{name}.png").exists() and (tmp_path / "out" / f"{name}_comparison.png").exists()
    assert Image.open(tmp_path / "out" / "face0.png").size == (48, 48)
    from iqpfr import precision

    expected = precision.resolve("auto", "cpu", bf16_flags=restore.INFERENCE_BF16_FLAGS)
    assert f"precision {expected} (auto)" in out  # the default, said once
    assert out.count("precision") == 1


def test_batch_equals_single(model):
    faces = [render_face([6, i], 32).image for i in range(5)]
    a = restore.restore_faces(model, faces, restore.RestoreOptions(batch_size=5), torch.device("cpu"))
    b = restore.restore_faces(model, faces, restore.RestoreOptions(batch_size=1), torch.device("cpu"))
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_paste_back_leaves_the_rest_unchanged():
    rng = np.random.default_rng(0)
    img = rng.random((200, 300, 3)).astype(np.float32)
    M = restore.box_to_template((120, 60, 50, 50), 64)
    face = np.zeros((64, 64, 3), np.float32)
    out = restore.paste_back(img.copy(), face, M, feather=0.08)
    inv = restore.cv2.invertAffineTransform(M)
    corners = np.array([[0, 0, 1], [64, 64, 1]]) @ inv.T  # the crop's extent in the image
    (x0, y0), (x1, y1) = corners.astype(int)
    outside = np.ones(img.shape[:2], bool)
    outside[max(y0 - 1, 0):y1 + 2, max(x0 - 1, 0):x1 + 2] = False
    assert np.array_equal(out[outside], img[outside])
    cy, cx = (y0 + y1) // 2, (x0 + x1) // 2
    assert np.abs(out[cy - 5:cy + 5, cx - 5:cx + 5]).max() < 0.05  # the centre is the pasted face


def test_paste_back_in_its_box_equals_a_full_frame_blend():
    """Blending only inside the crop's bounding box gives what a whole-frame warp and blend gives
    (up to OpenCV's 1/32-pixel interpolation grid, which the shifted origin can move: a smooth face)."""
    rng = np.random.default_rng(1)
    img = rng.random((300, 400, 3)).astype(np.float32)
    face = restore.cv2.GaussianBlur(rng.random((64, 64, 3)).astype(np.float32), (0, 0), 3)
    M = restore.eyes_to_template(np.array([[180.0, 140.0], [230.0, 150.0]]), 64)
    inv = restore.cv2.invertAffineTransform(M)
    back = restore.cv2.warpAffine(face, inv, (400, 300), flags=restore.cv2.INTER_CUBIC, borderMode=restore.cv2.BORDER_REFLECT)
    mask = restore.cv2.warpAffine(restore.face_mask(64, 0.08), inv, (400, 300), flags=restore.cv2.INTER_LINEAR)[..., None]
    full = np.clip(img * (1 - mask) + back * mask, 0, 1)
    np.testing.assert_allclose(restore.paste_back(img.copy(), face, M, 0.08), full, atol=5e-3)


def test_whole_image_on_a_real_photo(model, tmp_path):
    from skimage import data as skdata

    img = skdata.astronaut().astype(np.float32) / 255.0
    out, notes = restore.restore_whole(model, img, restore.RestoreOptions(aligned=False), torch.device("cpu"))
    assert out.shape == img.shape and "1 face(s) restored" in notes
    assert np.array_equal(out[-60:, :60], img[-60:, :60])  # far from the face: untouched
    assert np.abs(out - img).max() > 0.05  # the face changed


def test_never_overwrites_inputs(ckpts, tmp_path, capsys):
    _faces_folder(tmp_path / "in")
    before = (tmp_path / "in" / "face0.png").read_bytes()
    code = cli.main(["restore", str(tmp_path / "in" / "face0.png"), "-o", str(tmp_path / "in"), "--aligned",
                     "--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1])])
    assert code == 1 and "would overwrite an input" in capsys.readouterr().out
    assert (tmp_path / "in" / "face0.png").read_bytes() == before


def test_bad_checkpoint_and_options(ckpts, tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    _faces_folder(tmp_path / "in")
    args = ["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--aligned"]
    assert cli.main(args + ["--checkpoint", str(tmp_path / "junk.pt"), "--stage1", str(ckpts[1])]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
    assert cli.main(args + ["--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert cli.main(args + ["--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1]), "--precision", "fp16"]) == 2
    assert "fp16 is not supported on cpu" in capsys.readouterr().err
    assert cli.main(args + ["--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1]), "--score", "1.5"]) == 2


def test_bf16_warns_only_on_a_cpu_without_native_bf16():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert "emulated" in restore.bf16_warning(cpu, "bf16", {"avx2", "fma"})
    assert restore.bf16_warning(cpu, "bf16", {"avx2", "avx512_bf16"}) is None
    assert restore.bf16_warning(cpu, "bf16", {"amx_bf16"}) is None
    assert restore.bf16_warning(cpu, "fp32", set()) is None
    assert restore.bf16_warning(cuda, "bf16", set()) is None


def test_bf16_on_cpu_runs(model):
    faces = [render_face([7, 0], 32).image]
    a = restore.restore_faces(model, faces, restore.RestoreOptions(precision="bf16"), torch.device("cpu"))[0]
    assert a.shape == (32, 32, 3) and np.isfinite(a).all()


def _linear_dtypes(model):
    """Record the output dtype of every Linear layer of the Transformer while the model runs."""
    seen = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
             for m in model.transformer.modules() if isinstance(m, torch.nn.Linear)]
    return seen, hooks


def test_bf16_lowers_the_convolutions_and_keeps_the_transformer_in_fp32(model):
    x = torch.rand(2, 3, 32, 32)
    cpu = torch.device("cpu")
    ref = model.restore(x)
    z32 = model.encoder(x * 2 - 1)
    g32 = model.decode(z32)
    seen, hooks = _linear_dtypes(model)
    try:
        with restore.precision_context(model, cpu, "bf16"):
            z16 = model.encoder(x * 2 - 1)
            g16 = model.decode(z32)
            out = model.restore(x)
        with torch.autocast("cpu", torch.bfloat16):  # what whole-model autocast would do
            model.restore(x)
    finally:
        for h in hooks:
            h.remove()
    n = len(seen) // 2
    assert n > 0 and set(seen[:n]) == {torch.float32} and set(seen[n:]) == {torch.bfloat16}
    assert z16.dtype == torch.float32 and 0 < (z16 - z32).abs().max() < 0.05 * z32.abs().max()  # bf16 was used
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert 0 < (g16 - g32).abs().max() < 0.05  # the generator from the same codes: bf16, and close
    assert not {"forward", "forward_with_features"} & set(vars(model.encoder)) and "forward" not in vars(model.stage1.generator)
    assert torch.equal(model.restore(x), ref)  # fp32 again once the context is left


def test_bf16_reaches_the_fusion_path_of_imported_models():
    """With fidelity w > 0 the encoder hands features to the fusion blocks: they are lowered too."""
    from dataclasses import replace

    from iqpfr.vqgan import DualCodebookVQGAN

    torch.manual_seed(0)
    fused = QualityRestorer(DualCodebookVQGAN(V), replace(T, fidelity_resolutions=(32,))).eval()
    x = torch.rand(1, 3, 32, 32)
    _, f32 = fused.encoder.forward_with_features(x, (32,))
    with restore.precision_context(fused, torch.device("cpu"), "bf16"):
        z16, f16 = fused.encoder.forward_with_features(x, (32,))
        out = fused.restore(x, fidelity=0.5)
    assert z16.dtype == f16[32].dtype == out.dtype == torch.float32
    assert 0 < (f16[32] - f32[32]).abs().max() < 0.05 * f32[32].abs().max()  # rounded in bf16
    assert not {"forward", "forward_with_features"} & set(vars(fused.encoder))


def test_bf16_context_restores_the_networks_after_an_error(model):
    with pytest.raises(RuntimeError), restore.precision_context(model, torch.device("cpu"), "bf16"):
        model.restore(torch.rand(1, 2, 32, 32))  # two channels: the first convolution fails
    assert not {"forward", "forward_with_features"} & set(vars(model.encoder)) and "forward" not in vars(model.stage1.generator)
    assert isinstance(restore.precision_context(model, torch.device("cpu"), "fp32"), contextlib.nullcontext)


def test_very_large_inputs_are_skipped(model, tmp_path):
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(tmp_path / "big.png")
    opts = restore.RestoreOptions(max_pixels=100_000)
    summary = restore.run([tmp_path / "big.png"], tmp_path / "out", model, opts, torch.device("cpu"))
    assert summary.restored == [] and "larger than 100000 pixels" in summary.skipped[0][1]


def _rotated_face_photo(seed: int, angle: float):
    """A 256 px synthetic face pasted into a 512 px grey canvas and rotated about its centre by
    `angle` degrees; returns (photo, true landmarks (5, 2) in photo pixels)."""
    f = render_face(seed, 256)
    canvas = np.full((512, 512, 3), 0.5, np.float32)
    canvas[128:384, 128:384] = f.image
    R = restore.cv2.getRotationMatrix2D((256, 256), angle, 1.0)
    photo = restore.cv2.warpAffine(canvas, R, (512, 512), borderMode=restore.cv2.BORDER_REFLECT)
    return photo, np.c_[f.landmarks + 128, np.ones(5)] @ R.T


@pytest.mark.parametrize("angle", [0.0, 20.0])
def test_landmark_alignment_puts_the_eyes_on_the_template(angle):
    """Faces the project renders know their landmarks: after detection and 5-point alignment the
    true eye centres land on the template's within 4% of the crop, upright even for a tilted face."""
    from iqpfr.synthfaces import TEMPLATE_5PT

    photo, truth = _rotated_face_photo(0, angle)
    transforms, notes = restore.alignments(photo, restore.RestoreOptions(aligned=False), 256)
    assert len(transforms) == 1, notes
    eyes = np.c_[truth[:2], np.ones(2)] @ transforms[0].T
    assert np.abs(eyes / 256 - TEMPLATE_5PT[:2]).max() < 0.04
    box_only, _ = restore.alignments(photo, restore.RestoreOptions(aligned=False, align="box"), 256)
    if angle and box_only:  # a box cannot undo the tilt: its eye line stays rotated
        eyes_box = np.c_[truth[:2], np.ones(2)] @ box_only[0].T
        assert abs(eyes_box[1, 1] - eyes_box[0, 1]) > abs(eyes[1, 1] - eyes[0, 1]) + 5


def test_eyes_to_template_is_an_exact_similarity():
    from iqpfr.synthfaces import TEMPLATE_5PT

    eyes = np.array([[100.0, 120.0], [160.0, 100.0]])
    M = restore.eyes_to_template(eyes, 128)
    np.testing.assert_allclose(np.c_[eyes, np.ones(2)] @ M.T, TEMPLATE_5PT[:2] * 128, atol=1e-9)
    a = M[:, :2]
    np.testing.assert_allclose(a @ a.T, np.eye(2) * np.linalg.det(a), atol=1e-9)  # rotation times scale


def test_implausible_landmarks_are_refused():
    box = (100, 100, 100, 100)
    assert restore.plausible_eyes(np.array([[130.0, 140.0], [170.0, 140.0]]), box)
    assert not restore.plausible_eyes(np.array([[148.0, 140.0], [152.0, 140.0]]), box)  # eyes 4 px apart
    assert not restore.plausible_eyes(np.array([[130.0, 110.0], [160.0, 170.0]]), box)  # 63 degrees
    assert not restore.plausible_eyes(np.array([[20.0, 140.0], [70.0, 140.0]]), box)  # outside the box


def test_bundle_round_trip_and_strict_errors(ckpts, model, tmp_path, capsys):
    """`iqpfr export` writes one self-describing file that restores exactly like the two checkpoints."""
    bundle = tmp_path / "bundle.pt"
    assert cli.main(["export", "-o", str(bundle), "--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1])]) == 0
    loaded = restore.load_model(bundle)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(loaded.restore(x, 0.95), model.restore(x, 0.95))
    with pytest.raises(ValueError, match="carries its own stage I"):
        restore.load_model(bundle, ckpts[1])
    broken = torch.load(bundle, weights_only=True)
    broken["restorer"]["encoder"].popitem()
    torch.save(broken, tmp_path / "broken.pt")  # an edited bundle: its tensors no longer match its sha256
    with pytest.raises(ValueError, match=r"broken\.pt: the bundle's contents do not match its tensor_sha256"):
        restore.load_model(tmp_path / "broken.pt")
    broken["tensor_sha256"] = safeload.tensor_digest({k: v for k, v in broken.items() if k != "tensor_sha256"})
    torch.save(broken, tmp_path / "broken.pt")  # ... and one whose digest was forged too
    with pytest.raises(ValueError, match="weights do not match its config"):
        restore.load_model(tmp_path / "broken.pt")
    _faces_folder(tmp_path / "in")
    assert cli.main(["restore", str(tmp_path / "in" / "face0.png"), "-o", str(tmp_path / "out"), "--aligned",
                     "--checkpoint", str(bundle)]) == 0
    assert cli.main(["export", "-o", str(tmp_path / "x.pt"), "--checkpoint", str(tmp_path / "none.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_adain_follows_the_task_unless_asked(ckpts, tmp_path):
    """AdaIN is on for faces and off for colour enhancement (task.Task.adain); --adain/--no-adain override."""
    _faces_folder(tmp_path / "in")
    face = tmp_path / "in" / "face0.png"
    outs = {}
    for name, extra in {"face": [], "face_off": ["--no-adain"], "colour": ["--task", "colour"],
                        "colour_on": ["--task", "colour", "--adain"]}.items():
        assert cli.main(["restore", str(face), "-o", str(tmp_path / name), "--aligned", "--checkpoint", str(ckpts[0]),
                         "--stage1", str(ckpts[1]), *extra]) == 0
        outs[name] = np.asarray(Image.open(tmp_path / name / "face0.png"))
    assert np.array_equal(outs["face"], outs["colour_on"]) and np.array_equal(outs["face_off"], outs["colour"])
    assert not np.array_equal(outs["face"], outs["colour"])


def test_a_folder_tree_keeps_every_output(model, tmp_path):
    """Same-named files in different subfolders (a test set's hq/ and lq/) each get their own output,
    the tree mirrored under the output folder; of two inputs that would write the same file (a.jpg
    and a.png), the second is skipped with the reason instead of overwriting the first's result."""
    src, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(0)
    for rel in ("hq/000.png", "lq/000.png", "a.png", "a.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / rel)
    summary = restore.run(restore.list_inputs(str(src)), out, model, restore.RestoreOptions(), torch.device("cpu"))
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == ["a.png", "hq/000.png", "lq/000.png"]
    assert len(summary.restored) == 3
    ((skipped, why),) = summary.skipped
    assert skipped == str(src / "a.png") and str(src / "a.jpg") in why
    alone = restore.run([src / "lq" / "000.png"], tmp_path / "alone", model, restore.RestoreOptions(), torch.device("cpu"))
    assert alone.restored == [str(src / "lq" / "000.png")]
    lq_out, lq_alone = (np.asarray(Image.open(p), np.int16) for p in (out / "lq" / "000.png", tmp_path / "alone" / "000.png"))
    assert np.abs(lq_out - lq_alone).max() <= 1  # the lq input's own result, not the hq input's


def test_earlier_results_inside_the_input_folder_are_not_inputs(model, tmp_path):
    """`iqpfr restore faces/ -o faces/restored` twice: the second run reads faces/ recursively, and
    the first run's results in faces/restored are left out (with a note), not restored again into
    faces/restored/restored. An output folder that is the input folder itself excludes nothing."""
    src = tmp_path / "faces"
    src.mkdir()
    for i in range(2):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(src / f"{i}.png")
    out = src / "restored"
    for _ in range(2):
        summary = restore.run(restore.list_inputs(str(src)), out, model, restore.RestoreOptions(), torch.device("cpu"))
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png")) == ["0.png", "1.png", "restored/0.png",
                                                                                 "restored/1.png"]
    assert summary.restored == [str(src / "0.png"), str(src / "1.png")] and summary.skipped == []
    assert summary.notes == [(str(out), "2 file(s) inside the output folder left out: earlier results, not inputs")]
    same = restore.run(restore.list_inputs(str(out)), out, model, restore.RestoreOptions(suffix="_again"),
                       torch.device("cpu"))
    assert len(same.restored) == 2 and same.notes == []


def test_a_non_square_aligned_input_is_restored_with_a_note(model, tmp_path):
    """An aligned face is a square crop: a wide image is still restored at its own size, and the
    summary says it was stretched (and how to restore a photo instead); a square one gets no note."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("wide.png", (32, 64, 3)), ("square.png", (32, 32, 3))):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(src / name)
    summary = restore.run(restore.list_inputs(str(src)), tmp_path / "out", model, restore.RestoreOptions(),
                          torch.device("cpu"))
    assert len(summary.restored) == 2 and Image.open(tmp_path / "out" / "wide.png").size == (64, 32)
    ((noted, note),) = summary.notes
    assert noted == str(src / "wide.png") and "not square (64 x 32)" in note and "--aligned" in note


@pytest.fixture(scope="module")
def guided_ckpt(ckpts, tmp_path_factory):
    """A stage-II checkpoint with a "no score" bin (trained with score dropout) on the same stage I."""
    d = tmp_path_factory.mktemp("guided")
    torch.manual_seed(1)
    model1, _ = load_stage1_model(ckpts[1])
    imgs = torch.utils.data.TensorDataset(torch.rand(4, 3, 32, 32), torch.arange(4))
    targets = {"idx_c": torch.randint(0, 32, (4, 2, 16, 16)), "idx_h": torch.randint(0, 32, (4, 2, 16, 16))}
    cfg = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32,
                            null_bin=True)
    Stage2Trainer(QualityRestorer(model1, cfg), Stage2Settings(steps=2, batch_size=2, lr=1e-2, score_dropout=0.5), imgs,
                  targets, torch.rand(4), DegradedLQ(PRESETS["mild"])).train(checkpoint=d / "s2.pt")
    return d / "s2.pt"


def test_a_bundle_records_its_guidance_and_restores_with_it(ckpts, guided_ckpt, tmp_path, capsys, monkeypatch):
    """`iqpfr export --guidance w` records w; the bundle then restores with it unless told
    otherwise, and `iqpfr restore` says which w it used and where it came from."""
    bundle = tmp_path / "guided.pt"
    assert cli.main(["export", "-o", str(bundle), "--checkpoint", str(guided_ckpt), "--stage1", str(ckpts[1]),
                     "--guidance", "2.5"]) == 0
    model, recorded = restore.load_model_and_guidance(bundle)
    assert recorded == 2.5 and model.guidance == 2.5
    x = torch.rand(2, 3, 32, 32)
    at_w = load_restorer(guided_ckpt, ckpts[1], guidance=2.5)[0].restore(x, 0.95)
    plain = load_restorer(guided_ckpt, ckpts[1])[0].restore(x, 0.95)
    assert torch.equal(model.restore(x, 0.95), at_w) and not torch.equal(at_w, plain)
    _faces_folder(tmp_path / "in")
    face = str(tmp_path / "in" / "face0.png")
    capsys.readouterr()
    assert cli.main(["restore", face, "-o", str(tmp_path / "a"), "--aligned", "--checkpoint", str(bundle)]) == 0
    assert "guidance 2.5 (recorded in the bundle)" in capsys.readouterr().out
    assert cli.main(["restore", face, "-o", str(tmp_path / "b"), "--aligned", "--checkpoint", str(bundle),
                     "--guidance", "1"]) == 0
    assert "guidance 1.0 (--guidance)" in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)  # no params.yaml here: a stage-II checkpoint restores plainly
    assert cli.main(["restore", face, "-o", str(tmp_path / "c"), "--aligned", "--checkpoint", str(guided_ckpt),
                     "--stage1", str(ckpts[1])]) == 0
    assert "guidance 1.0 (no params.yaml here)" in capsys.readouterr().out


def test_default_guidance_is_the_params_for_a_guided_model_only(ckpts, guided_ckpt, root):
    from iqpfr.config import load_params

    default = root / "profiles" / "default.yaml"
    guided = load_restorer(guided_ckpt, ckpts[1])[0]
    assert restore.default_guidance(guided, default)[0] == load_params(default).transformer.guidance
    assert restore.default_guidance(load_restorer(*ckpts)[0], default) == (1.0, "the model has no 'no score' bin")


def test_guidance_is_refused_for_a_model_without_a_no_score_bin(ckpts, tmp_path, capsys):
    assert cli.main(["export", "-o", str(tmp_path / "x.pt"), "--checkpoint", str(ckpts[0]), "--stage1", str(ckpts[1]),
                     "--guidance", "2"]) == 2
    assert "guidance 2.0 is not possible" in capsys.readouterr().err
    assert not (tmp_path / "x.pt").exists()
