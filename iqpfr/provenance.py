"""Where a benchmark's figures come from: a stamp beside each file a benchmark writes.

Some notebook sections show measurements that scripts in `benchmarks/` make outside the pipeline
(design comparisons, training-length curves, seed spreads: more training than a stage can afford).
Those files are committed with the default profile's figures. A notebook executed on another
profile (tiny, paper, a folder of your own faces) must not present them as its own run's, and a
measurement of trained models must not outlive the models it measured.

So every benchmark output `F` gets a stamp `F.provenance.json`:

- `world`: the data it was measured on (`data.source`, `data.resolution`, `data.folder`, as the
  task sees them, overrides applied);
- `sections`: a digest of every params section as the benchmark read it;
- `models`: the sha256 of each pipeline model whose outputs it measured (where it measured them);
- `command`: how to make it again.

`verdict` compares a stamp with the run in hand. Another world, or other models, and the notebook
does not show the file; other settings within the same world, and it shows the file with a note
naming the sections that changed. A file without a stamp is not shown: where it came from is not
known.
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from . import atomic

SUFFIX = ".provenance.json"
MIXED, UNRECORDED = "mixed", "unrecorded"  # a section's digest when a file's rows were measured under several / unknown settings


def stamp_path(path: str | Path) -> Path:
    """The stamp that describes `path` (e.g. stage1_design.csv -> stage1_design.csv.provenance.json)."""
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


def world(data_cfg) -> dict:
    """The data a measurement was made on: a `data` params section (overrides applied) -> dict."""
    return {"source": data_cfg.source, "resolution": int(data_cfg.resolution),
            "folder": data_cfg.folder if data_cfg.source == "folder" else ""}


def describe(w: dict) -> str:
    """A `world` in words, for notebooks' messages."""
    if w["source"] == "folder":
        return f"the faces of {w['folder']} at {w['resolution']} px"
    return f"the synthetic world at {w['resolution']} px"


def digest(value: Any) -> str:
    """A short stable digest of a params section (a dataclass or a plain mapping)."""
    plain = asdict(value) if is_dataclass(value) else value
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _models(models: Iterable[str], root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of each model file."""
    return {str(m): atomic.sha256_file(root / m) for m in models}


def command(script: str, argv: list[str] | None) -> str:
    """The command line that ran benchmark `script` (e.g. "benchmarks/colour_seeds.py") with `argv`
    (None: this process's own arguments)."""
    return f"python {script} {shlex.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def sections_of(params) -> dict[str, Any]:
    """Every section of a Params ({name: section}), for `write`."""
    from .config import SECTIONS, section

    return {name: section(params, name) for name in SECTIONS}


def require_world(path: str | Path, data_cfg) -> None:
    """Before a benchmark adds rows to `path`: ValueError if its stamp describes another world."""
    sp = stamp_path(path)
    if Path(path).exists() and sp.exists():
        old = json.loads(sp.read_text())["world"]
        if old != world(data_cfg):
            raise ValueError(f"{path} holds measurements of {describe(old)} and this run is on "
                             f"{describe(world(data_cfg))}: write to another file (--out)")


def write(path: str | Path, data_cfg, sections: dict[str, Any], command: str, models: Iterable[str] = (),
          root: str | Path = ".", merged: bool = False) -> Path:
    """Stamp the benchmark output `path`: the world of `data_cfg`, a digest of each params section in
    `sections` ({name: section}), the sha256 of each file in `models` (paths relative to `root`),
    and the `command` that made it.

    With `merged` the benchmark has added rows to the file that the existing stamp describes: its
    world must be this one (ValueError otherwise), sections whose digest differs become "mixed"
    ("unrecorded" if the old stamp lacks them), and each different command is kept, in order."""
    root = Path(root)
    stamp = {"file": Path(path).name,
             "command": command,
             "world": world(data_cfg),
             "sections": {name: digest(value) for name, value in sorted(sections.items())},
             "models": _models(models, root)}
    out = stamp_path(path)
    if merged and out.exists():
        require_world(path, data_cfg)
        old = json.loads(out.read_text())
        for name, value in stamp["sections"].items():
            before = old.get("sections", {}).get(name, UNRECORDED)
            if before != value:
                stamp["sections"][name] = UNRECORDED if before == UNRECORDED else MIXED
        commands = old["command"].split("; ")
        stamp["command"] = "; ".join(commands if command in commands else [*commands, command])
    atomic.write_text(out, json.dumps(stamp, indent=1) + "\n")
    return out


def verdict(path: str | Path, data_cfg, sections: dict[str, Any], root: str | Path = ".") -> tuple[bool, str]:
    """May a notebook of this run show the benchmark output `path`? Returns (show, one line saying why).

    `data_cfg` and `sections` describe this run as `write` does; the models the stamp lists are
    looked up under `root`. Not shown: a missing file or stamp, another world, or a listed model that
    this project lacks or whose sha256 differs. Shown with a note: sections whose digest differs
    (e.g. a longer schedule, or rows measured under several settings), or that the stamp does not
    record.
    """
    path = Path(path)
    if not path.exists():
        return False, f"{path.name} not found"
    sp = stamp_path(path)
    if not sp.exists():
        return False, f"{path.name} has no provenance stamp ({sp.name}): where it was measured is not known, so it is not shown"
    stamp = json.loads(sp.read_text())
    here = world(data_cfg)
    if stamp["world"] != here:
        return False, (f"{path.name} was measured on {describe(stamp['world'])} and this run uses "
                       f"{describe(here)}: not shown (it describes other data and other models)")
    changed = [m for m, sha in stamp.get("models", {}).items()
               if not (Path(root) / m).exists() or atomic.sha256_file(Path(root) / m) != sha]
    if changed:
        return False, f"{path.name} measured other models than this run's ({', '.join(changed)}): not shown"
    recorded = stamp.get("sections", {})
    kinds: dict[str, list[str]] = {"unknown": [], "mixed": [], "other": []}
    for name, value in sorted(sections.items()):
        got = recorded.get(name, UNRECORDED)
        if got != digest(value):
            kinds["unknown" if got == UNRECORDED else "mixed" if got == MIXED else "other"].append(f"`{name}`")
    notes = [text + ", ".join(kinds[k]) for k, text in (("other", "with other settings than this run's in "),
                                                         ("mixed", "its rows under several settings of "),
                                                         ("unknown", "settings not recorded for "))
             if kinds[k]]
    note = f" ({'; '.join(notes)})" if notes else ""
    return True, f"{path.name}: measured on {describe(here)}{note}; made by `{stamp['command']}`"


def shown(path: str | Path, data_cfg, sections: dict[str, Any], rerun: str, root: str | Path = ".") -> bool:
    """For a notebook: print where the benchmark output `path` comes from (or why it is not shown,
    and `rerun`, the command that measures it for this run) and return whether to show it."""
    ok, why = verdict(path, data_cfg, sections, root)
    print(why if ok else f"{why}. To measure it here: {rerun}")
    return ok
