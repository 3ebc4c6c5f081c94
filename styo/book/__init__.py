"""What the book's chapters share, apart from the method they explain.

- :mod:`styo.book.chapters`: the backend switch (mini, sd15, ...), the example pair, the cached
  IDL run; :mod:`styo.book.opening`: ``setup(...)``, the one call that opens every chapter. Their
  names are also this package's, so a chapter writes ``from styo.book import setup`` or
  ``from styo import book; book.setup(...)``.
- :mod:`styo.book.experiments`: scoring with the judges, sweeps and ablations, the claims' checks.
- :mod:`styo.book.viz`, :mod:`styo.book.showcase`: figures; :mod:`styo.book.explorer`: the
  attention widgets.
- :mod:`styo.book.results`: the committed benchmark results as tables and figures.
- :mod:`styo.book.toc`, :mod:`styo.book.colab`: the table of contents and the chapters' Colab
  install cell (``python -m styo.book.colab`` rewrites it in every chapter).

The method (``styo.prompts``, ``styo.idl``, ``styo.fcc``, ...) never imports this package.
:mod:`styo.book.chapters` is imported on first use of one of its names: the torch-free modules
(``toc``, ``colab``, ``results``) stay light for the browser check and the timing script.
"""

from __future__ import annotations

import importlib
from typing import Any

# The public names of styo.book.chapters, served from here (PEP 562) without importing torch early.
_CHAPTERS = (
    "BACKENDS",
    "Backend",
    "ExamplePair",
    "MINI_SOURCE",
    "MINI_TARGET",
    "NeedsGPU",
    "ROOT",
    "SD15",
    "SD15_PAIR",
    "auxiliary_set",
    "auxiliary_sets",
    "backend_settings",
    "bench_pipeline",
    "cache_root",
    "cached_idl",
    "example_pair",
    "load_backend",
    "load_tokenizer",
    "rendered_auxiliary_set",
    "settings_table",
    "with_steps",
    "write_sd15_pair",
)

# ... and of styo.book.opening, the one call that opens a chapter.
_OPENING = ("Chapter", "setup")

__all__ = [*_CHAPTERS, *_OPENING]


def __getattr__(name: str) -> Any:
    if name in _CHAPTERS:
        return getattr(importlib.import_module(".chapters", __name__), name)
    if name in _OPENING:
        return getattr(importlib.import_module(".opening", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CHAPTERS, *_OPENING})
