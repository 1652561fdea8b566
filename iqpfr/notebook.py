"""Run a parameterised notebook as a pipeline stage.

The one way params reach a notebook: its cell tagged `parameters` assigns one variable per
params section it reads (`data = {}`, `scoring = {}`); this runner injects each of those sections
of `params.yaml` (validated first) as a plain dict, and papermill executes the notebook with kernel
`python3` in the project root. The stage's `params:` in dvc.yaml must list exactly those sections
(a test checks it), so DVC re-runs the notebook when, and only when, what it reads changes.

Usage: python -m iqpfr.notebook notebooks/01_score_dataset.ipynb reports/01_score_dataset.ipynb
"""
from __future__ import annotations

import argparse
import ast
import sys
import time
import typing
from dataclasses import asdict, is_dataclass
from pathlib import Path

from .config import SECTIONS, ConfigError, Params, _convert, build, load_params, override_section, section


def parameter_names(notebook: str | Path) -> list[str]:
    """Names assigned in the notebook's `parameters` cell, in order."""
    import nbformat  # here, not at the top: every notebook's kernel imports this module for `sections`

    nb = nbformat.read(str(notebook), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{notebook}: expected exactly one cell tagged 'parameters', found {len(cells)}")
    names = []
    for node in ast.parse(cells[0].source).body:
        if not isinstance(node, ast.Assign) or not all(isinstance(t, ast.Name) for t in node.targets):
            raise ValueError(f"{notebook}: the parameters cell may only assign names (line {node.lineno})")
        names += [t.id for t in node.targets]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        raise ValueError(f"{notebook}: parameters {unknown} are not params sections {list(SECTIONS)}")
    return names


def sections(**raw: dict) -> dict:
    """In a notebook: turn the injected dicts back into validated dataclasses, by section name."""
    types = typing.get_type_hints(Params)
    out = {}
    for name, value in raw.items():
        if name not in types:
            raise ConfigError(f"{name}: unknown params section")
        if is_dataclass(types[name]):
            out[name] = build(types[name], value, name)
            out[name].validate()
        else:  # `variants`: a plain mapping, checked against the other sections by config.variant
            out[name] = _convert(name, types[name], value)
    return out


def task_sections(task: str, **raw: dict) -> dict:
    """In a task's notebook: the sections as that task's stages see them, i.e. with the task
    section's `overrides` applied (`config.task_params` for a whole params file)."""
    out = sections(**raw)
    for name, values in out[task].overrides.items():
        if name in out:
            out[name] = override_section(out[name], values, f"{task}.overrides.{name}")
    return out


def run(src: str | Path, dst: str | Path, params_path: str | Path = "params.yaml") -> float:
    """Execute notebook `src` into `dst` with its params sections injected; return seconds taken."""
    import papermill as pm

    params = load_params(params_path)
    names = parameter_names(src)
    injected = {n: asdict(v) if is_dataclass(v := section(params, n)) else v for n in names}
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pm.execute_notebook(str(src), str(dst), parameters=injected, kernel_name="python3",
                        cwd=str(Path.cwd()), progress_bar=False, log_output=True)
    return time.time() - t0


def skip_iri_grammar() -> None:
    """Spare the runner about a second of start-up: where the optional package rfc3987-syntax is
    installed (Jupyter's dependencies pull it in), jsonschema compiles its RFC 3987 grammar when
    imported, to check strings of format "iri". nbformat validates notebooks against Draft 4 schemas
    that use no "format" and without a format checker, so that grammar is never used here. Marking
    the module absent makes jsonschema leave the "iri" check out. Call before nbformat is imported."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # None in sys.modules: `import` raises ImportError


def main(argv: list[str] | None = None) -> None:
    skip_iri_grammar()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from .runtime import pin_environment

    pin_environment()  # inherited by the notebook's kernel
    try:
        seconds = run(args.notebook, args.output, args.params)
    except ConfigError as err:
        raise SystemExit(f"params error: {err}") from None
    print(f"executed {args.notebook} -> {args.output} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
