"""The reports as a browsable book: `python -m iqpfr.book` (outside DVC: no stage depends on it).

1. Executes the walkthrough (notebooks/00_walkthrough.ipynb) at its full sizes into
   reports/00_walkthrough.ipynb with papermill (skip with --no-execute).
2. Renders every executed notebook reports/0*.ipynb to HTML with nbconvert's lab template, minus
   everything that template would fetch from the network (require.js, MathJax: equations stay
   as their TeX source), so the book builds and reads offline. Figures are the notebooks' own
   embedded PNG outputs; metric tables are their printed tables.
3. Writes index.html: a table of contents with each chapter's title and section headings,
   linked to their anchors.

Output: build/book/ by default (git-ignored; rebuild it whenever the reports change).
"""
from __future__ import annotations

import argparse
import html
import re
import time
from pathlib import Path

import nbformat

REPORTS = Path("reports")
WALKTHROUGH = Path("notebooks/00_walkthrough.ipynb")
OUT = Path("build/book")
TEMPLATES = Path(__file__).parent / "resources"


def execute_walkthrough(out: Path = REPORTS / "00_walkthrough.ipynb", parameters: dict | None = None) -> float:
    """Run the walkthrough top to bottom (kernel python3, cwd = project root); returns seconds."""
    import papermill

    t0 = time.time()
    papermill.execute_notebook(str(WALKTHROUGH), str(out), parameters=parameters or {}, kernel_name="python3",
                               progress_bar=False, cwd=".")
    return time.time() - t0


def anchor(text: str) -> str:
    """The id nbconvert gives a markdown heading (spaces to '-', other characters kept)."""
    return text.strip().replace(" ", "-")


def headings(nb) -> list[tuple[int, str]]:
    """(level, text) of every markdown heading of a notebook, in order."""
    out = []
    for cell in nb.cells:
        if cell.cell_type != "markdown":
            continue
        for line in cell.source.splitlines():
            m = re.match(r"^(#{1,3})\s+(.*\S)\s*$", line)
            if m:
                out.append((len(m.group(1)), m.group(2)))
    return out


def render(notebook: Path, out_dir: Path) -> tuple[str, list[tuple[int, str]]]:
    """Write <out_dir>/<name>.html; returns (file name, headings)."""
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = HTMLExporter(extra_template_basedirs=[str(TEMPLATES)], template_name="book")
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": notebook.stem}})
    name = notebook.stem + ".html"
    (out_dir / name).write_text(body, encoding="utf-8")
    return name, headings(nb)


def index_page(chapters: list[tuple[str, list[tuple[int, str]]]]) -> str:
    """The contents page: one entry per chapter (its first heading), its sections nested."""
    items = []
    for name, heads in chapters:
        title = heads[0][1] if heads else name
        subs = "".join(f'<li><a href="{name}#{html.escape(anchor(t))}">{html.escape(t)}</a></li>'
                       for level, t in heads[1:] if level == 2)
        items.append(f'<li><a href="{name}">{html.escape(title)}</a><ul>{subs}</ul></li>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>iqpfr: the book</title>"
            "<style>body{font-family:sans-serif;max-width:52em;margin:2em auto;line-height:1.5;padding:0 1em}"
            "ul ul{font-size:0.9em}</style></head><body>"
            "<h1>iqpfr: the book</h1><p>The executed notebooks of <code>reports/</code>: the walkthrough, "
            "then the pipeline's stages in order. Built offline by <code>python -m iqpfr.book</code>; "
            "equations are shown as their TeX source.</p>"
            f"<h2>Contents</h2><ol>{''.join(items)}</ol></body></html>\n")


def build(out_dir: Path = OUT, execute: bool = True, progress=print) -> Path:
    """Build the book; returns the index page's path."""
    if execute:
        progress(f"executing {WALKTHROUGH} (full size) ...")
        progress(f"  done in {execute_walkthrough():.0f} s")
    notebooks = sorted(REPORTS.glob("0*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no executed notebooks in {REPORTS}: run dvc repro (and the walkthrough)")
    out_dir.mkdir(parents=True, exist_ok=True)
    chapters = []
    for nb in notebooks:
        chapters.append(render(nb, out_dir))
        progress(f"rendered {nb} -> {out_dir / chapters[-1][0]}")
    index = out_dir / "index.html"
    index.write_text(index_page(chapters), encoding="utf-8")
    return index


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--output", default=str(OUT), help="folder for the HTML book")
    ap.add_argument("--no-execute", action="store_true", help="do not re-run the walkthrough first")
    args = ap.parse_args(argv)
    print(f"book: {build(Path(args.output), not args.no_execute)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
