# Two commands for readers: `make book` and `make test`. Both set up .venv first.
# `make test-fast` is for working on the library: every test but the chapters, the book build
# and the browser check.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.styo-installed
# The CPU wheel of torch (this is what a CPU machine should get; never a multi-GB CUDA build).
# On another CPU machine, add: TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_SPEC ?= torch==2.13.*
TORCH_PIP_ARGS ?=
KERNEL := styo

.PHONY: setup test test-fast lint book bench clean
setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	$(PY) -m pip install -q -e ".[book,dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (styo)" >/dev/null
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check styo tests benchmarks

test: lint
	$(PY) -m pytest -q

test-fast: lint
	$(PY) -m pytest -q --ignore=tests/test_notebooks.py --ignore=tests/test_browser.py

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --keep-going
	$(PY) tests/browser.py _build/html --screenshot book/fcc.html
	@echo "Book: $(CURDIR)/_build/html/index.html"

bench: $(STAMP)
	$(PY) benchmarks/sd_scale.py

clean:
	rm -rf _build
