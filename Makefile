# Shoal developer entry points. Both targets work from a fresh clone on a fresh Debian
# machine (as root): they create .venv when it is missing and bring up the platform
# (Docker engine + single-node swarm) through shoal.platform.engine.
#
#   make up     bring everything up: engine, swarm, images, operator, example database
#   make test   ruff, mypy --strict, then the whole pytest suite

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shoal-installed

.PHONY: up test venv platform images lint typecheck pytest clean-venv

up: venv
	$(BIN)/python -m shoal.platform.engine
	$(BIN)/shoal up
	$(BIN)/shoal get

test: venv platform lint typecheck pytest

venv: $(STAMP)

# (Re)install when pyproject.toml changes. Debian ships venv support separately.
$(STAMP): pyproject.toml
	@if [ ! -x $(BIN)/python ]; then \
	  if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
	    rm -rf $(VENV); \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y python3-venv; \
	    else \
	      echo "cannot create a venv: install python3-venv (Python >= 3.11)" >&2; exit 1; \
	    fi; \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

platform: venv
	$(BIN)/python -m shoal.platform.engine

images: platform
	$(BIN)/shoal images build

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy --strict shoal

# Exit code 5 (no tests collected) is a failure, not a pass.
pytest: venv
	@rc=0; $(BIN)/python -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

clean-venv:
	rm -rf $(VENV)
