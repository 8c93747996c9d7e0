# polars-curate: `make demo` and `make test` set everything up themselves on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
# Outside the clone so CI and later clones reuse the (8-minute) first build of the polars crates.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/polars-curate/target
CARGO_KERNELS := cargo --locked
RUST_SRC := $(shell find src -name '*.rs') Cargo.toml Cargo.lock
PY_SRC   := $(shell find python -name '*.py' -o -name '*.pyi')

.PHONY: all venv build test test-rust test-python demo bench bench-rust bench-scale bench-ray check lint fmt clean

all: test

$(VENV)/.deps: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "maturin>=1.16,<2" "polars==2.1.0" "numpy>=1.24" "tqdm>=4.60" \
		"pytest>=8" "hypothesis>=6.100" "ruff>=0.6"
	touch $@

venv: $(VENV)/.deps

# Release build of the plugin, installed into the virtualenv (editable: python/ is used in place).
$(VENV)/.built: $(VENV)/.deps $(RUST_SRC) $(PY_SRC) pyproject.toml
	VIRTUAL_ENV=$(abspath $(VENV)) PATH="$(abspath $(VENV))/bin:$$PATH" \
		maturin develop --release --locked --quiet
	touch $@

build: $(VENV)/.built

test: test-rust test-python

test-rust:
	$(CARGO_KERNELS) test --release --no-default-features

test-python: build
	$(PY) -m pytest -q

demo: build
	$(PY) examples/quickstart.py
	$(PY) examples/pipeline_demo.py demo-out

bench: build
	$(PY) benches/bench.py

# The job at DataComp scale: generates ~25 GB under bench-results/scale (kept for reruns).
bench-scale: build
	$(PY) benches/bench_scale.py

# The job on a local two-node Ray cluster against the local run.
bench-ray: build
	RAY_USAGE_STATS_ENABLED=0 $(PY) benches/bench_ray.py

bench-rust:
	$(CARGO_KERNELS) bench --no-default-features --bench kernels

check: lint test

lint: build
	cargo fmt --check
	$(CARGO_KERNELS) clippy --release --all-targets -- -D warnings
	$(CARGO_KERNELS) clippy --release --all-targets --no-default-features -- -D warnings
	$(VENV)/bin/ruff check python tests examples benches
	$(VENV)/bin/ruff format --check python tests examples benches

fmt:
	cargo fmt
	$(VENV)/bin/ruff format python tests examples benches
	$(VENV)/bin/ruff check --fix python tests examples benches

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
