"""The bad-input corpus through every entry point that reads user images: each bad file is
reported with a reason, the rest are processed, nothing crashes, exit codes are the documented
ones (benchmarks/bad_inputs.py prints the same as the README's table)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from iqpfr import badinputs, data

ROOT = Path(__file__).resolve().parent.parent
BAD = {"truncated.png", "truncated.jpg", "zero.png", "text.png", "bomb.png", "header_20000.png", "loop.png"}
CONVERTED = {"deep16.png": "16-bit", "palette_alpha.png": "alpha", "animated.gif": "first of 2 frames",
             "exif_rotated.jpg": "EXIF orientation 6"}


def _script():
    spec = importlib.util.spec_from_file_location("bad_inputs", ROOT / "benchmarks" / "bad_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_entry_point_reports_every_bad_file(tmp_path):
    script = _script()
    items = badinputs.build(tmp_path / "corpus")
    s2, s1 = script.tiny_checkpoints(tmp_path)
    res = script.outcomes(tmp_path / "corpus", tmp_path / "work", s2, s1)
    for entry, said in res.items():
        for name in BAD:
            assert said[name].startswith(("skipped:", "rejected:")), (entry, name, said.get(name))
        for name, note in CONVERTED.items():  # the scorer lists scores, not conversions
            assert note in said[name] if entry != "iqpfr score" else said[name] == "scored", (entry, name, said[name])
    assert all(res[e]["(exit code)"] == "1" for e in ("restore --aligned", "restore (whole photo)", "iqpfr score"))
    odd = data.display_name(next(n for n in items if n.startswith("latin1_")))
    assert res["folder source"][odd] == "ingested"  # a name that is not UTF-8 is processed and recorded escaped
    assert res["folder source"]["one_pixel.png"] == "rejected: too small (1x1)"
    ingested = (tmp_path / "work" / "ingest" / "manifest.csv").read_text()
    assert "\\udce9" in ingested
