"""Papermill runs every chapter listed in _toc.yml, with CI-sized parameters.

A failing cell fails the test, and papermill's error names the cell and shows its traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from styo.book import toc

import browser

ROOT = Path(__file__).resolve().parent.parent
KERNEL = "styo"  # installed by `make setup` (python -m ipykernel install --sys-prefix --name styo)

# Small parameters for CI (fewer steps, fewer pictures); `make book` runs the chapters with their
# own (full) values. Chapters that share the IDL run use the same idl_steps, so CI trains it once.
CI_PARAMETERS: dict[str, dict] = {
    "book/intro.ipynb": {"idl_steps": 20, "sample_steps": 5, "n_images": 2},
    "book/base_model.ipynb": {"styles": ["photo", "cartoon"], "seeds": [0, 1], "guidances": [1.0, 5.0]},
    "book/prompts.ipynb": {},
    "book/auxiliary.ipynb": {"show": 16, "folder_count": 4},
    "book/idl.ipynb": {"idl_steps": 20, "seeds": [0]},
    "book/attention.ipynb": {"idl_steps": 20},
    "book/fcc.ipynb": {
        "idl_steps": 20, "sample_steps": 5, "n_images": 2,
        "control_ranges": [[0.0, 0.5], [0.0, 1.0]], "strengths": [0.6, 1.0],
    },
    "book/augmented_prompt.ipynb": {
        "idl_steps": 20, "sample_steps": 5, "n_images": 2,
        "n_s_values": [1, 3], "n_c_values": [1, 3], "train_augmentations": [[3, 1]],
    },
    "book/ablations.ipynb": {"idl_steps": 20, "sample_steps": 5, "n_images": 2, "pair_seeds": [1]},
    "book/world.ipynb": {"seeds": [3, 11, 19], "caption_samples": 3, "codec_samples": 8,
                         "sharpness_prompts": 2},
    "book/appendix.ipynb": {},
}


def toc_files() -> list[str]:
    """Every document of _toc.yml, in reading order (root first)."""
    return toc.documents(ROOT / "_toc.yml")


def toc_notebooks() -> list[str]:
    return toc.notebooks(ROOT / "_toc.yml")


def tracked_notebooks() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "*.ipynb"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.split()
    return out or [str(p.relative_to(ROOT)) for p in ROOT.glob("book/*.ipynb")]


def test_every_toc_entry_exists():
    for f in toc_files():
        assert any((ROOT / (f + ext)).exists() for ext in (".ipynb", ".md")), f"_toc.yml lists {f}"


def test_every_chapter_has_ci_parameters():
    assert set(toc_notebooks()) == set(CI_PARAMETERS), "add CI parameters for each chapter"


@pytest.mark.parametrize("path", tracked_notebooks())
def test_notebook_committed_without_outputs(path):
    nb = json.loads((ROOT / path).read_text())
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert not cell.get("outputs"), f"{path} cell {i} has outputs: clear them before committing"
            assert cell.get("execution_count") is None, f"{path} cell {i} has an execution count"
    if (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5):  # cell ids: nbformat will require them
        ids = [cell.get("id") for cell in nb["cells"]]
        assert None not in ids, f"{path} cell {ids.index(None)} has no id: give it a unique one"
        assert len(set(ids)) == len(ids), f"{path} has duplicate cell ids"


@pytest.mark.parametrize("path", toc_notebooks())
def test_notebook_has_parameters_cell(path):
    nb = json.loads((ROOT / path).read_text())
    tagged = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, f"{path} needs exactly one cell tagged 'parameters'"
    assert 'backend = "mini"' in "".join(tagged[0]["source"])


def test_every_notebook_in_book_is_a_chapter():
    """A notebook left out of _toc.yml would be neither built nor tested."""
    chapters = set(toc_notebooks())
    orphans = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("book/*.ipynb")
                     if str(p.relative_to(ROOT)) not in chapters)
    assert not orphans, f"add {orphans} to _toc.yml"


def run_notebook(path: str, parameters: dict, out_dir: Path) -> None:
    papermill = pytest.importorskip("papermill")
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        pytest.fail(f"kernel {KERNEL!r} is not installed: run `make setup`")
    papermill.execute_notebook(
        str(ROOT / path),
        str(out_dir / Path(path).name),
        parameters=parameters,
        kernel_name=KERNEL,
        cwd=str((ROOT / path).parent),
        progress_bar=False,
    )


@pytest.fixture(scope="session")
def executed_dir(tmp_path_factory):
    """Where the chapters' papermill runs are kept, so the rendered-book check reuses them."""
    return tmp_path_factory.mktemp("executed")


@pytest.fixture(scope="session")
def book_cache(tmp_path_factory):
    """One fresh cache for every chapter of the session (the kernels inherit STYO_CACHE): they
    share their IDL run as in `make book`, and nothing from an earlier run is reused."""
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("styo-cache")
        mp.setenv("STYO_CACHE", str(path))
        yield path


@pytest.mark.notebook
@pytest.mark.parametrize("path", toc_notebooks())
def test_notebook_runs(path, executed_dir, book_cache):
    run_notebook(path, CI_PARAMETERS[path], executed_dir)


# Chapters run once more on the SD-1.5-shaped pipeline (styo.sd15_shaped: SD 1.5's configs, narrow
# channels, random weights, loaded through from_pretrained), so that no assumption of the miniature
# world (image size, UNet levels, tokenizer, judges) hides in the sd15 path. Every chapter that
# takes a model from its backend; the world chapter and the appendix take none. About 12 min.
MODEL_FREE_CHAPTERS = {"book/world.ipynb", "book/appendix.ipynb"}


@pytest.mark.notebook
@pytest.mark.parametrize("path", [p for p in toc_notebooks() if p not in MODEL_FREE_CHAPTERS])
def test_chapter_runs_on_the_sd15_shaped_pipeline(path, book_cache, tmp_path):
    parameters = {**CI_PARAMETERS[path], "backend": "sd15-shaped"}
    if "idl_steps" in parameters:
        parameters["idl_steps"] = 4  # random weights: the steps only have to run
    run_notebook(path, parameters, tmp_path)
    nb = json.loads((tmp_path / Path(path).name).read_text())
    printed = "".join(t for c in nb["cells"] for o in c.get("outputs", []) for t in o.get("text", []))
    source = (ROOT / path).read_text()
    if any(call in source for call in ("example_pair(", "ablation_pairs(", "source_path=source_path")):
        assert "sd15-source.png" in printed  # the shipped sd15 pair, loaded at the pipeline's size


@pytest.mark.notebook
def test_a_chapter_stylizes_the_readers_own_images(book_cache, tmp_path):
    """`source_path` / `target_path`: files of any size and mode, loaded as `styo stylize` does."""
    from styo.book import MINI_SOURCE
    from styo.world.render import render

    face, style = tmp_path / "my face.png", tmp_path / "my style.jpg"
    render(MINI_SOURCE, "photo", 5, size=128).crop((0, 16, 128, 112)).convert("RGBA").save(face)
    render(MINI_SOURCE, "pixel", 6, size=100).convert("L").save(style)
    run_notebook("book/idl.ipynb", {**CI_PARAMETERS["book/idl.ipynb"], "source_path": str(face),
                                    "target_path": str(style)}, tmp_path)
    nb = json.loads((tmp_path / "idl.ipynb").read_text())
    printed = "".join(t for c in nb["cells"] for o in c.get("outputs", []) for t in o.get("text", []))
    assert "source: my face.png: centre-cropped the 128x96 image to 96x96" in printed
    assert "target: my style.jpg: converted the L image to RGB" in printed


# Pages that must carry an ipywidgets view once they are in the book (the attention explorer).
WIDGET_PAGES = {"book/attention"}


def build_book_from(executed_dir: Path, root: Path) -> Path:
    """Jupyter Book over the papermill-executed chapters (execution off: CI-sized outputs)."""
    shutil.copytree(ROOT / "book", root / "book", ignore=shutil.ignore_patterns("*.ipynb"))
    for name in ("_toc.yml", "references.bib"):
        shutil.copy(ROOT / name, root / name)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config["execute"]["execute_notebooks"] = "off"
    (root / "_config.yml").write_text(yaml.safe_dump(config))
    for path in toc_notebooks():
        shutil.copy(executed_dir / Path(path).name, root / path)
    done = subprocess.run(
        [str(Path(sys.executable).parent / "jupyter-book"), "build", str(root), "--keep-going"],
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return root / "_build" / "html"


@pytest.mark.notebook
def test_rendered_book_shows_every_chapter_in_a_browser(executed_dir, book_cache, tmp_path):
    """After the build, headless Chromium loads every chapter page: each shows non-blank figures,
    and the attention explorer's page carries its widget."""
    chromium = browser.find_chromium()
    if chromium is None and os.environ.get("STYO_REQUIRE_CHROMIUM"):
        pytest.fail("STYO_REQUIRE_CHROMIUM is set but no chromium is on PATH")
    if chromium is None:
        pytest.skip("no chromium on PATH (.ci/run installs Debian's chromium; apt-get install chromium)")
    for path in toc_notebooks():  # chapters whose papermill run did not happen in this session
        if not (executed_dir / Path(path).name).exists():
            run_notebook(path, CI_PARAMETERS[path], executed_dir)
    html = build_book_from(executed_dir, tmp_path)
    for page in toc_files():
        report = browser.page_report(chromium, html / f"{page}.html")
        assert not report.blank, f"{page}: blank or broken figures {report.blank}"
        assert report.figures > 0, f"{page} shows no figure"
        if page in WIDGET_PAGES:
            assert report.widget_views > 0, f"{page} carries no widget"
