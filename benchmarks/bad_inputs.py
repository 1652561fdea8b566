"""Run every entry point that reads user images on the bad-input corpus (iqpfr/badinputs.py) and
print what each said per file, as the markdown table of the README's reliability section.

    python benchmarks/bad_inputs.py [--checkpoint S2 --stage1 S1]

Without checkpoints a tiny restorer is trained for one step (input handling does not depend on
the weights). Entry points: the folder data source (`data.ingest_folder`), `iqpfr score` (a
folder of any size scored directly; a random-weight prior), `iqpfr restore --aligned` and
`iqpfr restore` (whole photo).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import torch

from iqpfr import badinputs, cli, data


def tiny_checkpoints(d: Path) -> tuple[Path, Path]:
    from iqpfr.conditioned import DegradedLQ, Stage2Settings, Stage2Trainer
    from iqpfr.degrade import PRESETS
    from iqpfr.train import Stage1Settings, Stage1Trainer, load_stage1_model
    from iqpfr.transformer import QualityRestorer, TransformerConfig
    from iqpfr.vqgan import VQGANConfig

    v = VQGANConfig(resolution=32, nf=8, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(16,), emb_dim=16,
                    codebook_size=32, disc_nf=8, disc_layers=2, fusion_heads=2)
    t = TransformerConfig(latent_size=16, emb_dim=16, codebook_size=32, n_layers=1, n_heads=2, d_model=16, d_ff=32)
    torch.manual_seed(0)
    imgs = torch.utils.data.TensorDataset(torch.rand(4, 3, 32, 32), torch.arange(4))
    Stage1Trainer(v, Stage1Settings(steps=1, batch_size=2, lr=1e-3, gan_start=10**9), imgs, torch.ones(4)).train(
        checkpoint=d / "s1.pt")
    m1, _ = load_stage1_model(d / "s1.pt")
    targets = {"idx_c": torch.randint(0, 32, (4, 2, 16, 16)), "idx_h": torch.randint(0, 32, (4, 2, 16, 16))}
    Stage2Trainer(QualityRestorer(m1, t), Stage2Settings(steps=1, batch_size=2, lr=1e-3), imgs, targets, torch.rand(4),
                  DegradedLQ(PRESETS["mild"])).train(checkpoint=d / "s2.pt")
    return d / "s2.pt", d / "s1.pt"


def scorer_outcomes(corpus: Path, work: Path) -> dict[str, str]:
    """What `iqpfr score` said per file (a random-weight prior: input handling does not depend on it)."""
    from iqpfr import iqanet

    torch.manual_seed(0)
    prior = work / "prior.pt"
    iqanet.save(prior, iqanet.IqaNet(iqanet.IqaNetConfig(width=8, mode="regression")), {"resolution": 32})
    out = work / "scores.csv"
    with contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["score", str(corpus), "-o", str(out), "--prior", str(prior), "--workers", "0"])
    said = {data.display_name(Path(f).name): "scored" for f in pd.read_csv(out)["file"]} if out.exists() else {}
    rejected = out.with_name("scores.rejected.csv")
    if rejected.exists():
        said.update({data.display_name(Path(f).name): f"rejected: {r}" for f, r in pd.read_csv(rejected)[["file", "reason"]].itertuples(index=False)})
    said["(exit code)"] = str(code)
    return said


def outcomes(corpus: Path, work: Path, s2: Path, s1: Path) -> dict[str, dict[str, str]]:
    """{entry point: {file name: what it said}} and the exit codes of the restore runs."""
    res: dict[str, dict[str, str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df, rej = data.ingest_folder(corpus, work / "ingest", 64)
    res["folder source"] = {**{Path(s).name: f"ingested ({c})" if c else "ingested" for s, c in zip(df["source"], df["conversions"])},
                            **{Path(f).name: f"rejected: {r}" for f, r in zip(rej["file"], rej["reason"])}}
    prefix = data.display_name(corpus) + "/"
    res["iqpfr score"] = scorer_outcomes(corpus, work)
    for name, extra in (("restore --aligned", ["--aligned"]), ("restore (whole photo)", [])):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = cli.main(["restore", str(corpus), "-o", str(work / name.split()[1]), "--checkpoint", str(s2),
                             "--stage1", str(s1), *extra])
        said: dict[str, str] = {}
        for line in buf.getvalue().splitlines():
            line = line.strip()
            if line.startswith("skipped ") and ": " in line:
                f, why = line[len("skipped "):].split(": ", 1)
                said[Path(f).name] = f"skipped: {why}"
            elif ": " in line and line.startswith(prefix):
                f, note = line.split(": ", 1)
                said.setdefault(Path(f).name, "restored")
                said[Path(f).name] += f" ({note})" if "restored" in said[Path(f).name] else ""
        res[name] = said
        res[name]["(exit code)"] = str(code)
    return {c: {k: v.replace(prefix, "") for k, v in d.items()} for c, d in res.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint")
    ap.add_argument("--stage1")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        items = badinputs.build(tmp / "corpus")
        s2, s1 = (Path(args.checkpoint), Path(args.stage1)) if args.checkpoint else tiny_checkpoints(tmp)
        res = outcomes(tmp / "corpus", tmp / "work", s2, s1)
    cols = list(res)
    print("| file | what it is | " + " | ".join(cols) + " |")
    print("| --- | --- |" + " --- |" * len(cols))
    for name, what in items.items():
        key = data.display_name(name)
        if name.endswith("/"):  # a directory is searched as a folder, whatever its name
            cells = ["searched as a folder (empty)"] * len(cols)
        else:
            cells = [res[c].get(key, "restored" if c.startswith("restore") else "(not listed)") for c in cols]
        print(f"| `{key}` | {what} | " + " | ".join(cells) + " |")
    print("| (exit code) | | " + " | ".join(res[c].get("(exit code)", "") for c in cols) + " |")


if __name__ == "__main__":
    main()
