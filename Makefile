# The README's two commands: `make demo` and `make test`. Each creates .venv when it is missing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_DIR   ?= data/sample
DEMO_SIZE  ?= 20000
DEMO_AS_OF ?= 2025-07-01
PYTEST_ARGS ?= -n 2
# The lifetimes wheel ships the CDNOW sample the BTYD tests pin published numbers on (never installed).
CDNOW_WHEEL_DIR := .cache/lifetimes

.PHONY: install test-services demo serve test lint format clean bench-features bench-training bench-serving bench-batch

# The wheel check runs on every install (not only when the venv is rebuilt) so a deleted cache comes back.
install: $(STAMP)
	test -n "$$(ls $(CDNOW_WHEEL_DIR)/[Ll]ifetimes-0.11.3-*.whl 2>/dev/null)" || $(BIN)/python -m pip download -q --no-deps --dest $(CDNOW_WHEEL_DIR) lifetimes==0.11.3

# Exact pins live in constraints.txt (the whole stack, resolved once); lower bounds in pyproject.toml.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,spark]'
	touch $(STAMP)

demo: install
	$(BIN)/clm data generate --customers $(DEMO_SIZE) --seed 42 --out $(DEMO_DIR) --force
	$(BIN)/clm data validate --data $(DEMO_DIR)
	$(BIN)/clm features build --data $(DEMO_DIR) --as-of $(DEMO_AS_OF) --out $(DEMO_DIR)-features.parquet
	$(BIN)/clm train all --data $(DEMO_DIR) --as-of $(DEMO_AS_OF)
	$(BIN)/clm score --data $(DEMO_DIR) --as-of $(DEMO_AS_OF) --out $(DEMO_DIR)-scores.parquet
	$(BIN)/clm features materialize --data $(DEMO_DIR) --as-of $(DEMO_AS_OF)
	@echo
	@echo "Start the scoring service with: make serve    (then paste the curl above)"

# The scoring service on the demo's champions and online store (make demo first).
serve: install
	$(BIN)/clm serve

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	test ! -e mlflow/__init__.py

# What the tests run beside the code (installed here when missing): Debian's Chromium for the
# report's rendering test, redis-server for the Redis online store.
test-services:
	command -v chromium >/dev/null || apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)
	command -v redis-server >/dev/null || apt-get install -y -q redis-server || (apt-get update -q && apt-get install -y -q redis-server)

test: lint test-services
	$(BIN)/python -m pytest $(PYTEST_ARGS)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench-features: install
	$(BIN)/python benchmarks/features.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench-training: install
	$(BIN)/python benchmarks/training.py

# wrk (Debian) drives the load; installed here when missing.
bench-serving: install
	command -v wrk >/dev/null || apt-get install -y -q wrk || (apt-get update -q && apt-get install -y -q wrk)
	$(BIN)/python benchmarks/serving.py

bench-batch: install
	$(BIN)/python benchmarks/batch.py
