# Two entry points: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.passkit-installed
MODELS ?= $(abspath ../shared/models)

.PHONY: setup demo test lint clean browser

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@# facenet-pytorch 2.6.0 declares stale pins (torch<2.3, numpy<2, Pillow<10.3) yet works with
	@# current versions: installed last and without its dependencies, so pip never downgrades torch.
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps facenet-pytorch==2.6.0
	@touch $(STAMP)

# Builds the embedded demo release from real HTTP downloads, then audits it.
demo: setup
	$(BIN)/passkit build pipelines/demo.yaml
	$(BIN)/passkit audit releases/demo-1.0.0

# Headless Chromium for the tests that load HTML pages (report.html, review page) through Playwright,
# which drives /usr/bin/chromium (no `playwright install` download).
browser:
	command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium)

# PASSKIT_MODELS is set from MODELS when that folder exists or MODELS was given (make test MODELS=...);
# otherwise passkit's own default (~/.cache/passkit/models, where `passkit models fetch` puts the files)
# applies. Tests that need absent weights or COCO data skip, counted in a block at the end.
test: setup browser
	$(if $(or $(filter-out file,$(origin MODELS)),$(wildcard $(MODELS))),PASSKIT_MODELS=$(MODELS)) \
	  $(BIN)/python -m pytest -q -ra tests

lint: setup
	$(BIN)/ruff check passkit tests benchmarks

clean:
	rm -rf releases work .pytest_cache
