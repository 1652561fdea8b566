"""`iqpfr import-weights`: released CodeFormer-family checkpoints mapped onto iqpfr.

The source state dicts are built from the documented key names and shapes with random values
(tests/codeformer_reference.py, written from the original architecture files, not from iqpfr's
modules); the real released files are not available offline. Equivalence is checked against a
functional forward pass of the original architecture run straight on the source state dict.
"""
from __future__ import annotations

import pickle

import pytest
import torch

from iqpfr import cli
from iqpfr.importweights import AUTHORS_HQ_WEIGHT, detect_format, import_weights
from iqpfr.restore import load_model
from iqpfr.train import load_stage1_model
from iqpfr.vqgan import Encoder, Generator, VQGANConfig

import codeformer_reference as ref  # tests/ is on sys.path (pytest rootdir-relative import)


@pytest.fixture(scope="module")
def iqpir_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("released") / "iqpir.pth"
    torch.save({"params_ema": ref.random_state("iqpir", seed=1), "params": {"x": torch.zeros(1)}}, path)
    return path


@pytest.fixture(scope="module")
def iqpir_bundle(iqpir_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "iqpir_bundle.pt"
    prov = import_weights(iqpir_file, out)
    return out, prov


def _face(seed: int = 0) -> torch.Tensor:
    """A smooth random 'photo' (1, 3, 512, 512) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32, generator=g), size=512, mode="bicubic",
                                           align_corners=False).clamp(0, 1)


def test_fusion_taps_are_codeformers_block_indices():
    cfg = VQGANConfig()  # the paper config
    enc, gen = Encoder(cfg), Generator(cfg)
    # CodeFormer counts conv_in as block 0; our `blocks` start after it
    assert {r: i + 1 for r, i in enc.taps.items()} == {int(k): v for k, v in ref.FUSE_ENCODER_BLOCK.items()}
    assert {r: i + 1 for r, i in gen.taps.items()} == {int(k): v for k, v in ref.FUSE_GENERATOR_BLOCK.items()}


def test_format_is_detected_from_keys():
    for kind in ("iqpir", "codeformer", "vqgan"):
        assert detect_format(ref.state_dict_spec(kind)) == kind
    with pytest.raises(ValueError, match="--format"):
        detect_format(["some.other.weight"])


def test_iqpir_import_round_trips_and_loads_strictly(iqpir_file, iqpir_bundle):
    out, prov = iqpir_bundle
    source = ref.random_state("iqpir", seed=1)
    assert prov["source_format"] == "iqpir" and prov["source_weights"] == "params_ema"
    assert set(prov["mapping"].values()) == set(source)  # every source tensor found a place
    assert prov["filled"] == {} and prov["hq_weight"] == AUTHORS_HQ_WEIGHT
    model = load_model(out)  # strict loads inside, and the bundle's tensor digest is checked
    assert model.fidelity is not None and model.cfg.conditioning == "add" and model.cfg.codebooks == "dual"
    w = source["idx_pred_layer.1.weight"]  # interleaved: row 2n + j is code n of book j (0 HQ+, 1 common)
    torch.testing.assert_close(model.transformer.head_h.weight, w[0::2], rtol=0, atol=0)
    torch.testing.assert_close(model.transformer.head_c.weight, w[1::2], rtol=0, atol=0)
    torch.testing.assert_close(model.transformer.score_map[3].reshape(-1), source["score_embed.weight"][3], rtol=0, atol=0)
    torch.testing.assert_close(model.stage1.quant_h.embedding.weight, source["quantize_aesthetic.embedding.weight"], rtol=0, atol=0)
    for enc in (model.encoder, model.stage1.encoder):  # CodeFormer's one encoder goes to both copies
        torch.testing.assert_close(enc.conv_in.weight, source["encoder.blocks.0.weight"], rtol=0, atol=0)
        torch.testing.assert_close(enc.blocks[3].skip.weight, source["encoder.blocks.4.conv_out.weight"], rtol=0, atol=0)
        torch.testing.assert_close(enc.norm_out.weight, source["encoder.blocks.23.weight"], rtol=0, atol=0)


def test_iqpir_output_equals_the_original_architecture(iqpir_bundle):
    """fp32, same input: same argmax codes and outputs within 1e-4 of the functional reference."""
    model = load_model(iqpir_bundle[0])
    sd = ref.random_state("iqpir", seed=1)
    x = _face()
    ours = model.restore(x, score=0.9, use_adain=True, fidelity=0.5)
    theirs, idx = ref.forward(sd, x * 2 - 1, "iqpir", score=0.9, w=0.5, adain=True, aesthetic_weight=AUTHORS_HQ_WEIGHT)
    torch.testing.assert_close(ours, ((theirs + 1) / 2).clamp(0, 1), rtol=0, atol=1e-4)
    bins = torch.full((1,), 9)
    lc, lh = model.transformer(model.latent(x, bins), bins)
    assert torch.equal(lh.argmax(-1), idx[..., 0]) and torch.equal(lc.argmax(-1), idx[..., 1])


@pytest.mark.slow
@pytest.mark.parametrize("w,adain", [(0.0, False), (0.0, True), (0.7, False)])
def test_iqpir_equivalence_with_and_without_adain_and_fusion(iqpir_bundle, w, adain):
    model = load_model(iqpir_bundle[0])
    sd = ref.random_state("iqpir", seed=1)
    x = _face(1)
    ours = model.restore(x, score=0.35, use_adain=adain, fidelity=w)
    theirs, _ = ref.forward(sd, x * 2 - 1, "iqpir", score=0.35, w=w, adain=adain, aesthetic_weight=AUTHORS_HQ_WEIGHT)
    torch.testing.assert_close(ours, ((theirs + 1) / 2).clamp(0, 1), rtol=0, atol=1e-4)


@pytest.mark.slow
def test_codeformer_import_is_the_single_codebook_baseline(tmp_path):
    src = tmp_path / "codeformer.pth"
    sd = ref.random_state("codeformer", seed=2)
    torch.save({"params_ema": sd}, src)
    prov = import_weights(src, tmp_path / "cf.pt")
    assert prov["source_format"] == "codeformer" and set(prov["filled"]) == {"stage1.quant_h.embedding.weight",
                                                                                "transformer.head_h.weight"}
    model = load_model(tmp_path / "cf.pt")
    assert model.cfg.codebooks == "common" and model.cfg.conditioning == "none" and model.hq_weight == 0.0
    x = _face(2)
    for w in (0.0, 0.5):
        theirs, _ = ref.forward(sd, x * 2 - 1, "codeformer", w=w, adain=True)
        torch.testing.assert_close(model.restore(x, fidelity=w), ((theirs + 1) / 2).clamp(0, 1), rtol=0, atol=1e-4)


def test_vqgan_import_is_a_stage1_checkpoint(tmp_path):
    src = tmp_path / "vqgan_code1024.pth"
    sd = ref.random_state("vqgan", seed=3)
    torch.save({"params_ema": sd}, src)
    prov = import_weights(src, tmp_path / "vqgan.pt")
    assert prov["source_format"] == "vqgan" and set(prov["mapping"].values()) == set(sd)
    model, _ = load_stage1_model(tmp_path / "vqgan.pt", expect=VQGANConfig())
    torch.testing.assert_close(model.quant_c.embedding.weight, sd["quantize.embedding.weight"], rtol=0, atol=0)
    torch.testing.assert_close(model.generator.conv_out.weight, sd["generator.blocks.24.weight"], rtol=0, atol=0)


@pytest.mark.parametrize("damage,named", [
    ("missing", "ft_layers.3.linear1.bias"),
    ("extra", "ft_layers.9.linear1.bias"),
    ("shape", "score_embed.weight"),
])
def test_a_tensor_without_a_place_is_refused_by_name(tmp_path, damage, named):
    sd = {k: torch.zeros(s) for k, s in ref.state_dict_spec("iqpir").items()}
    if damage == "missing":
        del sd[named]
    elif damage == "extra":
        sd[named] = torch.zeros(1024)
    else:
        sd[named] = torch.zeros(20, 16 * 16 * 256)  # a 20-bin embedding
    src = tmp_path / "bad.pth"
    torch.save({"params_ema": sd}, src)
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        import_weights(src, tmp_path / "out.pt", fmt="iqpir")
    assert not (tmp_path / "out.pt").exists()


class _Payload:
    def __reduce__(self):
        return (exec, ("open('PWNED', 'w').write('x')",))


def test_a_pickle_carrying_file_is_refused_without_running_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = tmp_path / "evil.pth"
    torch.save({"params_ema": {"quantize.embedding.weight": torch.zeros(2, 2)}, "x": _Payload()}, src,
               pickle_protocol=pickle.HIGHEST_PROTOCOL)
    assert cli.main(["import-weights", str(src), "-o", str(tmp_path / "out.pt")]) == 2
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out.pt").exists()


def test_restore_cli_runs_an_imported_bundle_with_fidelity(iqpir_bundle, tmp_path, capsys):
    import cv2
    import numpy as np

    img = (_face(4)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "face.png"), img[:, :, ::-1])
    code = cli.main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "out"), "--aligned",
                     "--checkpoint", str(iqpir_bundle[0]), "--score", "0.9", "--fidelity", "0.3"])
    assert code == 0 and (tmp_path / "out" / "face.png").exists()
    assert cli.main(["restore", str(tmp_path / "face.png"), "-o", str(tmp_path / "o2"), "--aligned",
                     "--checkpoint", str(iqpir_bundle[0]), "--fidelity", "1.5"]) == 2
