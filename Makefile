# Shoal developer entry points. Both targets work from a fresh clone on a fresh Debian
# machine (as root): they create .venv when it is missing, install the host tools they need
# and bring up the platform (Docker engine + single-node swarm) through shoal.platform.
#
#   make up     bring everything up: engine, swarm, images, operator, example database
#   make test   host tools, ruff, mypy --strict, unit tests (stop here if they fail), then
#               the Docker engine, the images and the real-Swarm integration and chaos tests,
#               and one multi-node test on a lab of Docker-in-Docker nodes
#   make multinode  every multi-node test (tests/multinode/, about 10 minutes)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.shoal-installed

.PHONY: up test venv tools platform images lint typecheck unit integration multinode clean-venv

up: venv
	$(BIN)/python -m shoal.platform.engine
	$(BIN)/shoal up
	$(BIN)/shoal get

# Order matters: the cheap checks first, so a broken unit stops the run in a minute.
test: venv tools lint typecheck unit platform images integration

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

# Host tools the tests use (promtool, chromium, debootstrap): shoal/platform/prerequisites.py
tools: venv
	$(BIN)/python -m shoal.platform.prerequisites test

platform: venv
	$(BIN)/python -m shoal.platform.engine

images: platform
	$(BIN)/shoal images build

lint: venv
	$(BIN)/ruff check .

typecheck: venv
	$(BIN)/mypy --strict shoal

# Exit code 5 (no tests collected) is a failure, not a pass.
PYTEST = rc=0; $(BIN)/python -m pytest -p no:cacheprovider -ra --durations=15 $(1) $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

unit: venv
	@$(call PYTEST,tests/unit)

# CI runs one multi-node test on a lab of four dind nodes (about 5 minutes with the lab's
# bring-up): a primary cut off with its clients, under sync, acknowledges nothing that is
# then lost. `make multinode` runs all of them (tests/multinode/), the async primary ended by
# its lease among them.
MULTINODE_SMOKE = tests/multinode/test_node_loss.py::test_a_primary_cut_off_with_its_clients_acknowledges_nothing_that_is_then_lost

integration: venv
	@$(call PYTEST,tests/integration tests/chaos $(MULTINODE_SMOKE))

multinode: venv platform images
	@$(call PYTEST,tests/multinode)

clean-venv:
	rm -rf $(VENV)
