# Two commands matter: `make run` and `make test`. Everything else is a step of those.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: run test lint fmt install install-dev clean bench image-test chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip==26.3

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP) $@

install: $(STAMP)
install-dev: $(DEV_STAMP)

run: $(STAMP)
	$(BIN)/deskbell db upgrade
	$(BIN)/deskbell serve

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy src

fmt: $(DEV_STAMP)
	$(BIN)/ruff check --fix src tests bench
	$(BIN)/ruff format src tests bench

# The dashboard's browser tests drive Debian's Chromium (never a downloaded browser).
chromium:
	command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)

test: lint chromium
	$(BIN)/pytest

# Build and run the container image for real (needs root for podman; ~3 min the first time).
image-test:
	bash scripts/image-test.sh

# Benchmarks print JSON; ingest, growth and scale-out need wrk (Debian's package); the
# delivery and scale-out ones need PostgreSQL (DESKBELL_BENCH_POSTGRES_URL, default the local one).
bench: $(STAMP)
	command -v wrk >/dev/null || apt-get install -y -q wrk
	$(BIN)/python bench/ingest.py --seconds 2 --rounds 21
	$(BIN)/python bench/ingest.py --seconds 2 --rounds 21 --rounds-only --log-format json
	$(BIN)/python bench/ingest.py --seconds 2 --rounds 21 --rounds-only --log-level warning
	$(BIN)/python bench/delivery.py --requests 3000 --rate 300 --seconds 6 --setups sqlite,sqlite1,pg1 --channel webhook
	$(BIN)/python bench/delivery.py --requests 3000 --rate 300 --seconds 6 --setups sqlite,sqlite1,pg1 --channel slack
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/growth.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache deskbell.db*
