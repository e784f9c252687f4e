# mrdhub: `make run` serves the API with demo data on SQLite; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate demo run test lint typecheck openapi openapi-check bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip==25.3
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

migrate: install
	$(BIN)/python -m app.cli migrate

demo: migrate
	$(BIN)/python -m app.cli load-demo

run: demo
	$(BIN)/uvicorn app.main:create_app --factory --host $(HOST) --port $(PORT)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy app

openapi: install
	$(BIN)/python -m app.openapi > openapi/openapi.json

openapi-check: install
	$(BIN)/python -m app.openapi --check openapi/openapi.json

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache
