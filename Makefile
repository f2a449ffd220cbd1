# learnstream: `make run` (the main job) and `make test` are the two set-up commands.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser run test lint format clean-home

install: $(STAMP)

# Idempotent: reuses .venv and reinstalls only when the pins change.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c requirements.lock -e '.[dev]'
	@touch $(STAMP)

run: install
	$(VENV)/bin/learnstream run

# The dashboard's browser test drives Debian's chromium (never a downloaded browser build).
# Tolerant of failure here: without chromium that test fails and says why.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
		|| echo "warning: could not install chromium; the dashboard browser test will fail"

test: install browser
	$(PY) -m pytest -q --durations=15

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean-home:
	rm -rf .learnstream
