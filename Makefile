# mrdhub: `make run` serves the API with demo data on SQLite; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | sha1sum | cut -c1-12)
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate demo run client browser test lint typecheck openapi openapi-check bench clean

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

# The local demo runs with authorisation off (it says so loudly); `make run AUTH=on` keeps it on.
AUTH ?= off
run: demo
	ENVIRONMENT=development AUTH_ENABLED=$(if $(filter on,$(AUTH)),true,false) \
	  $(BIN)/uvicorn app.main:create_app --factory --host $(HOST) --port $(PORT)

# Register a client: make client CLIENT=lis-hefei SITE=HEFEI-APCH SCOPES="system/Observation.c" KEY=var/lis-hefei.pem
client: install
	$(BIN)/python -m app.cli register-client --client-id "$(CLIENT)" --scopes "$(SCOPES)" --key "$(KEY)" \
	  $(if $(SITE),--site "$(SITE)",)

# Headless Chromium and its driver for tests/browser, from Debian's packages (never a downloaded browser).
# Skipped when the driver is there; `apt-get update` only when the package lists cannot serve the install.
APT_INSTALL := DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  chromium chromium-driver fonts-dejavu-core
SUDO := $(if $(filter 0,$(shell id -u)),,sudo -n)
browser:
	@test -x /usr/bin/chromedriver || $(SUDO) $(APT_INSTALL) </dev/null \
	  || { $(SUDO) apt-get update -q </dev/null && $(SUDO) $(APT_INSTALL) </dev/null; }

test: install browser
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy app

openapi: install
	$(BIN)/python -m app.openapi > openapi/openapi.json

openapi-check: install
	$(BIN)/python -m app.openapi --check openapi/openapi.json

# Every benchmark at moderate sizes (a few minutes) on the local PostgreSQL (127.0.0.1:5432, user postgres;
# databases created and dropped by the scripts) and SQLite: tables printed, figures in bench/results/*.json.
# `make bench ONLY=ingest_http` runs one of them.
bench: install
	$(BIN)/python bench/run.py $(ONLY)

clean:
	rm -rf $(VENV) var build .pytest_cache .mypy_cache .ruff_cache
