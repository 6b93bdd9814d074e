# stagectl: the two commands for a fresh machine are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo lint schemas bench bind clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# BIND is needed by the DNS tests; as root on a machine without it, install it from Debian.
bind:
	@if ! command -v named >/dev/null 2>&1 && ! test -x /usr/sbin/named; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing bind9 for the DNS tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9 bind9-utils >/dev/null; \
	  else echo "named is missing and this is not root: install bind9 bind9-utils"; exit 1; fi; \
	fi

test: setup bind
	@$(BIN)/pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'pytest collected no tests: that is a failure' >&2; exit 1; fi; exit $$rc

demo: setup
	$(BIN)/python -m controller.demo

lint: setup
	$(BIN)/ruff check controller tests bench
	$(BIN)/ruff format --check controller tests bench

schemas: setup
	$(BIN)/stagectl schema --out schemas

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
