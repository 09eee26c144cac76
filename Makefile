# The two commands of the README: `make demo` and `make test`. Each sets itself up first.
VENV := .venv/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: setup demo test lint typecheck pytest docs clean

setup:
	@scripts/setup.sh

demo: setup
	$(VENV)/weightspace models check
	$(VENV)/weightspace demo

test: setup lint typecheck pytest docs

lint:
	$(VENV)/ruff check src tests examples benchmarks docs
	$(VENV)/ruff format --check src tests examples benchmarks docs

typecheck:
	$(VENV)/mypy --strict src/weightspace

pytest:
	$(VENV)/pytest -n 2 --hypothesis-profile=ci

docs:
	$(VENV)/sphinx-build -W --keep-going -q -b html docs docs/_build/html

clean:
	rm -rf docs/_build docs/api/generated docs/auto_examples .mypy_cache .ruff_cache .pytest_cache
