"""The walkthrough notebook (tiny sizes, through papermill) and the reports as an HTML book."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = {"toy_points": 200, "toy_steps": 60, "n_faces": 24, "vq_steps": 20, "prior_epochs": 1, "knob_steps": 20,
        "ascent_steps": 5}


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory) -> Path:
    """notebooks/00_walkthrough.ipynb executed at tiny sizes (as CI runs it)."""
    import papermill

    out = tmp_path_factory.mktemp("walk") / "00_walkthrough.ipynb"
    papermill.execute_notebook(str(ROOT / "notebooks/00_walkthrough.ipynb"), str(out), parameters=TINY,
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT))
    return out


def test_walkthrough_runs_with_every_figure_and_its_run_time(walkthrough):
    nb = nbformat.read(str(walkthrough), as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    figures = sum(1 for c in code for o in c.outputs if "image/png" in o.get("data", {}))
    assert figures >= 6  # toy VQ, faces, prior (1), S knob, ascent (2)
    text = "".join(o.get("text", "") for o in code[-1].outputs)
    assert "walkthrough run time:" in text


def test_every_walkthrough_section_has_an_exercise_and_a_folded_answer():
    nb = nbformat.read(str(ROOT / "notebooks/00_walkthrough.ipynb"), as_version=4)
    md = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert sum("**Exercise" in s for s in md) == 5
    assert sum(s.startswith("<details>") for s in md) == 5
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1 and set(TINY) <= {line.split("=")[0].strip() for line in params[0].source.splitlines()
                                               if "=" in line and not line.startswith("#")}


def test_book_renders_offline_with_a_table_of_contents(walkthrough, tmp_path, monkeypatch):
    from iqpfr import book

    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copy(walkthrough, reports / "00_walkthrough.ipynb")
    monkeypatch.setattr(book, "REPORTS", reports)
    index = book.build(tmp_path / "book", execute=False, progress=lambda *_: None)
    page = (tmp_path / "book" / "00_walkthrough.html").read_text()
    fetched = re.findall(r"<(?:script|link|img)[^>]+(?:src|href)=[\"']https?://[^\"']+|@import url\([\"']?https?://[^)]+", page)
    assert not fetched  # nothing is fetched from the network
    assert "data:image/png;base64" in page
    contents = index.read_text()
    assert 'href="00_walkthrough.html#2.-A-VQ-autoencoder-on-faces"' in contents
    assert 'id="2.-A-VQ-autoencoder-on-faces"' in page  # the anchor the contents link to exists


def test_citation_file_has_the_compendium_and_the_paper():
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["title"].startswith("iqpfr") and cff["authors"]
    paper = cff["references"][0]
    assert "Image Quality Prior" in paper["title"] and paper["identifiers"][0]["value"] == "arXiv:2503.09294"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


@pytest.mark.slow
def test_cffconvert_validates_the_citation_file(tmp_path):
    """cffconvert pins old jsonschema/ruamel versions, so it runs in its own throwaway venv (needs PyPI)."""
    subprocess.run(["python3", "-m", "venv", str(tmp_path / "venv")], check=True)
    subprocess.run([str(tmp_path / "venv/bin/pip"), "install", "-q", "cffconvert==2.0.0"], check=True)
    out = subprocess.run([str(tmp_path / "venv/bin/cffconvert"), "--validate", "-i", str(ROOT / "CITATION.cff")],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "valid" in out.stdout, out.stdout + out.stderr


@pytest.mark.slow
def test_book_in_a_headless_browser(walkthrough, tmp_path, monkeypatch):
    """Chromium (bash scripts/setup.sh --browser) screenshots the index and one chapter; the
    chapter logs no console errors."""
    from iqpfr import book

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is missing: bash scripts/setup.sh --browser"
    reports = tmp_path / "reports"
    reports.mkdir()
    shutil.copy(walkthrough, reports / "00_walkthrough.ipynb")
    monkeypatch.setattr(book, "REPORTS", reports)
    index = book.build(tmp_path / "book", execute=False, progress=lambda *_: None)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,900"]

    def console(page: Path) -> list[str]:
        """Every console message the page logs (Chromium prints them all as INFO:CONSOLE lines)."""
        out = subprocess.run([chromium, *flags, "--enable-logging=stderr", "--v=0", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120)
        assert "</html>" in out.stdout.lower()
        return [line for line in out.stderr.splitlines() if ":CONSOLE" in line]

    bad = tmp_path / "bad.html"  # the check must see an error when there is one
    bad.write_text("<html><body><script>console.error('boom'); notDefined();</script></body></html>")
    assert len(console(bad)) == 2
    for page in (index, tmp_path / "book" / "00_walkthrough.html"):
        shot = tmp_path / f"{page.stem}.png"
        subprocess.run([chromium, *flags, f"--screenshot={shot}", page.as_uri()], check=True, capture_output=True,
                       timeout=120)
        assert shot.stat().st_size > 10_000  # a rendered page, not a blank one
        assert console(page) == []
