# storebox: `make run` (the outage drill: the whole box on this machine) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Debian packages the tests and `make run` use (real kernel tools, NetworkManager, mosquitto;
# dnsmasq-base for the LAN's DHCP and DNS and busybox's udhcpc as the LAN client's DHCP
# client; chromium and its driver for the fleet dashboard's browser test).
APT_PACKAGES := nftables mosquitto network-manager iproute2 iputils-ping conntrack socat dbus softhsm2 \
	dnsmasq-base udhcpc mmdebstrap systemd-container binutils postgresql chromium chromium-driver
PYTEST_ARGS ?=
DRILL_ARGS ?=

.PHONY: deps system-deps run box test bench lint clean deb test-package

deps: system-deps $(VENV)/.installed

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run 'sudo make deps')"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fleet]'
	touch $@

# The KT 2021 outage replayed against the real box in network namespaces (root);
# without root it says what it needs and how to run the parts (`make box`).
run: deps
	@if [ "$$(id -u)" != 0 ]; then \
	  $(VENV)/bin/storebox drill $(DRILL_ARGS) || { \
	    echo; echo "Without root, 'make box' runs the daemon alone with route control off."; exit 1; }; \
	else $(VENV)/bin/storebox drill $(DRILL_ARGS); fi

# Just the daemon with the example config, the modem and gateway simulators (no faults).
box: deps
	@bash scripts/run-box.sh

test: deps
	$(PY) -m pytest -q -ra $(PYTEST_ARGS)

# the fleet bench builds a mosquitto with a per-second keepalive check (benchmarks/broker/)
BENCH_APT_PACKAGES = gcc make libssl-dev dpkg-dev patch

bench: deps
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"
	$(PY) -m pytest -q -s benchmarks $(PYTEST_ARGS)

# The Debian package (CONTRACTS §9): dist/storebox_<version>_<arch>.deb, ARCH=arm64 (the Pi)
# or amd64; built here for either from the hash-locked wheels of packaging/requirements-*.txt.
ARCH ?= arm64
deb: deps
	bash packaging/build-deb.sh $(ARCH)

# Both packages checked (ELF machine and glibc of every .so, contents), the amd64 one
# installed into a throwaway Debian 12 root (mmdebstrap, cached in /var/cache/storebox-test)
# and booted with systemd-nspawn: READY=1 under the hardened unit, watchdog, selftest (root).
test-package: deps
	bash packaging/build-deb.sh arm64
	bash packaging/build-deb.sh amd64
	$(PY) -m pytest -q -ra -o python_files='package_*.py' \
	  tests/packaging/package_deb.py tests/packaging/package_root.py

lint: deps
	$(VENV)/bin/ruff check firmware failover payments_cache hw lab tests benchmarks
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) run .pytest_cache .mypy_cache .ruff_cache *.egg-info
