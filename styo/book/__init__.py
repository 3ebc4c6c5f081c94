"""What the book's chapters share, apart from the method they explain.

- :mod:`styo.book.chapters`: the backend switch (mini, sd15, ...), the example pair, the cached
  IDL run, and ``setup(...)``: the one call that opens every chapter. Its names are also this
  package's, so a chapter writes ``from styo.book import setup`` or ``from styo import book;
  book.setup(...)``.
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
    "Chapter",
    "ExamplePair",
    "MINI_SOURCE",
    "MINI_TARGET",
    "NeedsGPU",
    "ROOT",
    "SD15",
    "SD15_PAIR",
    "auxiliary_set",
    "backend_settings",
    "bench_pipeline",
    "cache_root",
    "cached_idl",
    "example_pair",
    "load_backend",
    "load_tokenizer",
    "settings_table",
    "setup",
    "with_steps",
    "write_sd15_pair",
)

__all__ = list(_CHAPTERS)


def __getattr__(name: str) -> Any:
    if name in _CHAPTERS:
        return getattr(importlib.import_module(".chapters", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_CHAPTERS})
