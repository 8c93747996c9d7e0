# polars-curate: `make demo` and `make test` set everything up themselves on a fresh machine.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

VENV    ?= .venv
PY      := $(VENV)/bin/python
PYTHON  ?= python3
# The optional dependencies (pyproject.toml) that the virtualenv gets: tests, report, Ray.
EXTRAS  ?= test,report,ray,s3
# Outside the clone so CI and later clones reuse the (8-minute) first build of the polars crates.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/polars-curate/target
# Build with the committed Cargo.lock (maturin's PEP 517 backend reads its cargo flags here).
export MATURIN_PEP517_ARGS ?= --locked
CARGO_KERNELS := cargo --locked
RUST_SRC := $(shell find src -name '*.rs') Cargo.toml Cargo.lock
PY_SRC   := $(shell find python -name '*.py' -o -name '*.pyi')

.PHONY: all venv build test test-rust test-python demo bench bench-rust bench-scale bench-ray bench-cluster check lint fmt clean

all: test

$(VENV)/.deps:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	touch $@

venv: $(VENV)/.deps

# `pip install -e` of the package itself, as a user would install it: every version comes from
# pyproject.toml (maturin from [build-system], the rest from dependencies and EXTRAS), never from
# a second list here. Release build (tool.maturin.profile); editable: python/ is used in place.
$(VENV)/.built: $(VENV)/.deps $(RUST_SRC) $(PY_SRC) pyproject.toml
	$(PY) -m pip install --quiet -e ".[$(EXTRAS)]"
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
# k-means, assignment and SemDeDup against faiss-cpu (the `bench` extra, installed here).
bench-cluster: build
	$(PY) -m pip install --quiet -e ".[$(EXTRAS),bench]"
	$(PY) benches/bench_cluster.py

bench-ray: build
	RAY_USAGE_STATS_ENABLED=0 $(PY) benches/bench_ray.py

bench-rust:
	$(CARGO_KERNELS) bench --no-default-features --bench kernels

check: lint test

lint: build
	cargo fmt --check
	$(CARGO_KERNELS) clippy --release --all-targets -- -D warnings
	$(CARGO_KERNELS) clippy --release --all-targets --no-default-features -- -D warnings
	$(VENV)/bin/ruff check python tests examples benches conftest.py
	$(VENV)/bin/ruff format --check python tests examples benches conftest.py

fmt:
	cargo fmt
	$(VENV)/bin/ruff format python tests examples benches conftest.py
	$(VENV)/bin/ruff check --fix python tests examples benches conftest.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
