"""The chapters' first cell, which installs the book on Colab: written once, here.

On Colab a chapter starts without the package. Its first cell clones the repository and installs
it; every failure must stop the notebook there with one line saying what failed (a failed
``!git clone`` does not stop a notebook: the reader would meet a ``ModuleNotFoundError`` a cell
later). After installing it says whether the session must be restarted: only when a package that
was already imported changed version (Colab ships ipywidgets 7; the book installs 8).

The repository URL has one home, ``_config.yml``'s ``repository.url`` (launch buttons read it
too); ``python -m styo.book.colab`` writes the cell from it into every chapter of ``_toc.yml``, and the
tests check that every chapter holds exactly this text.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

_TEMPLATE = '''\
# On Colab only: fetch the book's repository and install it (a local run has the package already).
# Written by `python -m styo.book.colab` from _config.yml (repository.url): the same in every chapter.
# To keep models and results across sessions, mount Drive and set STYO_CACHE to a folder on it.
import sys

if "google.colab" in sys.modules:
    import importlib.metadata as md
    import os
    import subprocess

    REPO, HERE = "{url}", "/content/{name}"
    before = {{d.metadata["Name"].lower(): d.version for d in md.distributions()}}
    todo = [(f"pip install -e {{HERE}}", [sys.executable, "-m", "pip", "install", "-q", "-e", HERE])]
    if not os.path.isdir(os.path.join(HERE, ".git")):
        todo.insert(0, (f"git clone {{REPO}}", ["git", "clone", "--depth", "1", REPO, HERE]))
    for what, command in todo:
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:  # stop here, with the reason in one line
            last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
            raise RuntimeError(f"{{what}} failed (exit {{done.returncode}}): {{last}}")
    sys.path.insert(0, HERE)
    from styo.book.colab import restart_notice

    print(restart_notice(before, REPO))
'''


def restart_notice(before: dict[str, str], repo: str, modules: Any = None) -> str:
    """What the install cell tells the reader: restart the session only when a package that was
    already imported changed version (its old code stays loaded until a restart), else that the
    install is done. ``before`` maps distribution names to versions before the install."""
    import importlib.metadata as md

    now = {d.metadata["Name"].lower(): d.version for d in md.distributions()}
    changed = {n: v for n, v in now.items() if before.get(n, v) != v}
    owners = md.packages_distributions()  # top-level module -> distributions
    loaded = sys.modules if modules is None else modules
    imported = {d.lower() for m in list(loaded) for d in owners.get(m.split(".")[0], [])}
    stale = sorted(imported & set(changed))
    if not stale:
        return f"styo installed from {repo}; no restart needed."
    return ("Restart needed: already imported, now upgraded: "
            + ", ".join(f"{n} {before[n]} -> {changed[n]}" for n in stale)
            + ". Runtime > Restart session, then run the notebook again (the install is kept).")


def repository_url(config: Path = ROOT / "_config.yml") -> str:
    """``repository.url`` of the book's ``_config.yml``."""
    import yaml

    url = (yaml.safe_load(config.read_text()) or {}).get("repository", {}).get("url")
    if not url or not re.match(r"^https://\S+$", url):
        raise ValueError(f"{config} has no https repository.url; set it to the book's repository")
    return url.rstrip("/")


def install_cell(url: str | None = None) -> str:
    """The first code cell of every chapter, for the repository at ``url`` (default: _config.yml)."""
    url = url or repository_url()
    name = url.removesuffix(".git").rsplit("/", 1)[-1]
    return _TEMPLATE.format(url=url, name=name)


def first_code_cell(notebook: dict) -> dict:
    return next(c for c in notebook["cells"] if c["cell_type"] == "code")


def write_install_cells(root: Path = ROOT) -> list[str]:
    """Put :func:`install_cell` into every chapter of ``_toc.yml``; returns the ones changed."""
    from .toc import notebooks

    text, changed = install_cell(), []
    for rel in notebooks(root / "_toc.yml"):
        path = root / rel
        nb = json.loads(path.read_text())
        cell = first_code_cell(nb)
        if "".join(cell["source"]) != text:
            cell["source"] = text.splitlines(keepends=True)
            path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
            changed.append(rel)
    return changed


if __name__ == "__main__":
    done = write_install_cells()
    print("\n".join(done) or "every chapter already holds the install cell", file=sys.stderr)
