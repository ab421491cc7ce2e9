# The README's commands. Everything installs into .venv from PyPI (torch: the CPU build pinned below).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= train,service,cpu,dev

.PHONY: install install-bench train test serve evaluate readme bench bench-load gpu-check report clean

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

# The web page's browser test (tests/test_web_page.py) drives Debian's chromium (Playwright's own browser
# download may be unreachable); installed here where apt-get can, and that test skips, saying so, where not.
test: install
	@test -x /usr/bin/chromium || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 || \
		echo "could not install chromium: tests/test_web_page.py will skip"
	$(PY) -m pytest -q $(ARGS)

serve: install
	$(PY) -m service $(ARGS)

evaluate: install
	$(PY) -m training.evaluate $(ARGS)

# Benchmarks also need OpenCV (Haar cascade baseline); kept out of the test environment.
$(VENV)/.installed-bench: $(VENV)/.installed
	$(PY) -m pip install --quiet -e ".[bench]"
	@command -v wrk >/dev/null || ! command -v apt-get >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null 2>&1 || \
		echo "note: wrk (Debian package) is not installed: bench.load runs without its wrk cells"
	touch $@

install-bench: $(VENV)/.installed-bench

bench: install-bench  ## benchmarks: tables printed, JSON in bench/results/ (a few minutes each)
	$(PY) -m bench.localise
	$(PY) -m bench.reconstruction
	$(PY) -m bench.fairness
	$(PY) -m bench.inference
	$(PY) -m bench.training
	$(PY) -m bench.quality
	$(PY) -m bench.ddp

bench-load: install-bench  ## serving: under load vs a floor and a naive peer, memory per request, worker scaling (~20 min)
	$(PY) -m bench.load
	$(PY) -m bench.memory
	$(PY) -m bench.scaling --payload png64 --out scaling_png64
	$(PY) -m bench.scaling --payload jpeg640x480 --out scaling_photo

gpu-check:  ## benchmark 5, on a GPU machine (< 5 min; without a GPU it says so and keeps no results)
	bash bench/gpu_check.sh

report: install-bench  ## model report: reports/*.png + reports/report.md from the committed models/
	$(PY) -m bench.report

readme: install  ## rewrite the README's generated parts from models/manifest.json and bench/results/
	$(PY) -m bench.readme

clean:
	rm -rf $(VENV) checkpoints .pytest_cache
