"""The Colab install cell: one text in every chapter, its URL from _config.yml, loud failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from styo.book import colab, toc

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", toc.notebooks(ROOT / "_toc.yml"))
def test_every_chapter_starts_with_the_one_install_cell(path):
    nb = json.loads((ROOT / path).read_text())
    cell = "".join(colab.first_code_cell(nb)["source"])
    assert cell == colab.install_cell(), f"{path}: run `python -m styo.book.colab` to rewrite its install cell"


def test_the_repository_url_has_one_home_which_the_readme_names():
    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    cell = colab.install_cell()
    assert colab.repository_url() == url.rstrip("/") and url in cell
    assert "!git" not in cell and "%pip" not in cell  # shell escapes do not stop a notebook
    readme = (ROOT / "README.md").read_text()
    assert url in readme and "_config.yml" in readme
    other = colab.install_cell("https://example.org/me/my-fork")
    assert "https://example.org/me/my-fork" in other and "/content/my-fork" in other


def _run_cell(tmp_path: Path, url: str, here: Path) -> subprocess.CompletedProcess:
    """The cell as Colab would run it: a fresh interpreter with a google.colab module."""
    cell = colab.install_cell(url).replace('"/content/', f'"{here.parent}/')
    script = "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')\n" + cell
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, timeout=300)


def test_a_failed_clone_stops_the_cell_with_one_line(tmp_path):
    missing = tmp_path / "no-such-repository"
    done = _run_cell(tmp_path, f"https://{missing}", tmp_path / "clones" / "no-such-repository")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("RuntimeError: git clone https://") and "failed (exit" in last


def test_a_failed_install_stops_the_cell_with_one_line(tmp_path):
    here = tmp_path / "clones" / "not-a-package"
    (here / ".git").mkdir(parents=True)  # looks cloned already, but holds no Python project
    done = _run_cell(tmp_path, "https://example.org/x/not-a-package", here)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"RuntimeError: pip install -e {here} failed (exit"), last


def test_a_restart_is_asked_only_for_an_imported_package_that_changed():
    import importlib.metadata as md

    now = {d.metadata["Name"].lower(): d.version for d in md.distributions()}
    older = {**now, "numpy": "0.0"}
    asked = colab.restart_notice(older, "https://example.org/r", modules={"numpy": None})
    assert asked.startswith("Restart needed") and f"numpy 0.0 -> {now['numpy']}" in asked
    assert "no restart needed" in colab.restart_notice(older, "https://example.org/r", modules={"json": None})
    assert "no restart needed" in colab.restart_notice(now, "https://example.org/r")
