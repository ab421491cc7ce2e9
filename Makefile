# The README's commands. Everything installs into .venv from PyPI (torch: the CPU build pinned below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,service,cpu,dev

.PHONY: install train test serve evaluate readme-metrics clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

train: install  ## train both models on the built-in data, export to models/, print the evaluation
	$(PY) -m training $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

serve: install
	$(PY) -m service $(ARGS)

evaluate: install
	$(PY) -m training.evaluate $(ARGS)

readme-metrics: install  ## rewrite the README's metrics table from models/manifest.json
	$(PY) -m training.evaluate --update-readme README.md

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
