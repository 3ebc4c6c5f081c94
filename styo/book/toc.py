"""The book's table of contents (`_toc.yml`), read in one place.

`make book` builds, the tests execute, `benchmarks/book_timing.py` times and `tests/browser.py`
looks at the same documents in the same order: the reading order of `_toc.yml`, root first.
Kept free of torch: the browser check and the timing script read it before anything heavy.
"""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def documents(toc: str | Path = ROOT / "_toc.yml") -> list[str]:
    """Every document of a Jupyter Book `_toc.yml`, without extension, in reading order.

    Follows `chapters`, nested `sections` and `parts`, as Jupyter Book does.
    """
    data = yaml.safe_load(Path(toc).read_text())
    found = [data["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                found.append(entry["file"])
            walk(entry.get("sections"))

    walk(data.get("chapters"))
    for part in data.get("parts", []):
        walk(part.get("chapters"))
    return found


def notebooks(toc: str | Path = ROOT / "_toc.yml") -> list[str]:
    """The documents that are notebooks, as paths relative to the book's root (`book/x.ipynb`)."""
    root = Path(toc).resolve().parent
    return [f + ".ipynb" for f in documents(toc) if (root / (f + ".ipynb")).exists()]
