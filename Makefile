# The two entry points a new user needs (see README.md). Both set everything up first.
.PHONY: setup run test lint typecheck pytest bench

VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

setup:
	@bash scripts/setup.sh

run: setup
	$(BIN)/mvs up --foreground

test: setup lint typecheck pytest

lint:
	$(BIN)/ruff check mvs streams projections replay tests benchmarks

typecheck:
	$(BIN)/mypy

pytest:
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python -m benchmarks
