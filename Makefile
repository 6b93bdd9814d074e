# stagectl: the two commands for a fresh machine are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup test demo lint schemas bench bind browser etcd clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# BIND is needed by the DNS tests, ssh-keygen by the signed-commit tests and systemd-analyze by the operator
# guide's unit test; as root, install them from Debian.
bind:
	@if { ! command -v named && ! test -x /usr/sbin/named; } >/dev/null 2>&1 || ! command -v ssh-keygen >/dev/null 2>&1 \
	    || ! command -v systemd-analyze >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing bind9, openssh-client and systemd for the DNS, signed-commit and unit-file tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bind9 bind9-utils openssh-client git systemd >/dev/null; \
	  else echo "named, ssh-keygen or systemd-analyze is missing and this is not root: install bind9 bind9-utils openssh-client systemd"; exit 1; fi; \
	fi

# The migration page's browser test drives Debian's chromium through Debian's chromedriver (Selenium);
# as root, install them like BIND (a browser build of Selenium's own cannot be downloaded here).
browser:
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing chromium and chromium-driver for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "chromium or chromedriver is missing and this is not root: install chromium chromium-driver"; exit 1; fi; \
	fi

# The high-availability tests (issue 17) start a real 3-member etcd cluster on loopback (free ports, never
# 2379/2380); as root, install Debian's etcd-server and etcd-client like BIND.
# Debian's etcd-server would start a system etcd on 2379 as it installs: a policy-rc.d keeps it from starting
# (the tests start their own members on free ports), and is removed again if this made it.
POLICY_RC_D ?= /usr/sbin/policy-rc.d
etcd:
	@if ! command -v etcd >/dev/null 2>&1 || ! command -v etcdctl >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing etcd-server and etcd-client for the high-availability tests"; \
	    policy=$(POLICY_RC_D); made=; \
	    if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod +x $$policy && made=1; fi; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null; \
	    rc=$$?; if [ -n "$$made" ]; then rm -f $$policy; fi; [ $$rc -eq 0 ] || exit $$rc; \
	  else echo "etcd or etcdctl is missing and this is not root: install etcd-server etcd-client"; exit 1; fi; \
	fi

test: setup bind browser etcd
	@$(BIN)/pytest -q; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo 'pytest collected no tests: that is a failure' >&2; exit 1; fi; exit $$rc

demo: setup
	$(BIN)/python -m controller.sim.demo

# ruff; the layer contracts in pyproject.toml ([tool.importlinter]); mypy, strict on controller/.
lint: setup
	$(BIN)/ruff check controller tests bench
	$(BIN)/ruff format --check controller tests bench
	$(BIN)/lint-imports
	$(BIN)/mypy

schemas: setup
	$(BIN)/stagectl schema --out schemas

bench: setup bind etcd
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
