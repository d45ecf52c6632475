# The README's two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
EXTRAS := all
PYTEST_ARGS ?=
# pytest-xdist workers for `make test` (0: one process); one file stays on one worker, so
# module fixtures (a trained teacher, a PostgreSQL server) are built once per worker.
PYTEST_WORKERS ?= 2

.PHONY: demo test lint install fashion-mnist test-services clean

# On a bare Debian/Ubuntu machine, python3 -m venv needs python3-venv (ensurepip).
$(BIN)/python:
	@if ! $(PYTHON) -c "import ensurepip, venv" >/dev/null 2>&1; then \
	  echo "Installing python3, python3-venv and python3-pip (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq python3 python3-venv python3-pip >/dev/null; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when the package metadata changes.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

# Fashion-MNIST from Debian (the embedded real data set); needs root.
fashion-mnist:
	@if ! dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then \
	  echo "Installing dataset-fashion-mnist (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	fi

# What the bootstrapping tests start themselves: headless Chromium + chromedriver
# (the labelling page) and a PostgreSQL server (in a temporary directory); needs root.
TEST_PACKAGES := chromium chromium-driver postgresql
test-services:
	@missing=$$(for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing $$missing (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

lint: install
	$(BIN)/ruff check .

test: install fashion-mnist test-services lint
	@set +e; TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m pytest -q -ra --durations=25 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

demo: install fashion-mnist
	TF_CPP_MIN_LOG_LEVEL=2 $(BIN)/python -m keras_fgvc.demo

clean:
	rm -rf $(VENV) artifacts .pytest_cache .ruff_cache
