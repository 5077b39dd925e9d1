# Two commands on a fresh Debian/Ubuntu machine as root: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES := busybox-static mmdebstrap podman skopeo umoci runc crun uidmap docker-registry \
	apache2-utils chromium zstd xz-utils iproute2 nftables hyperfine libseccomp2 gcc libc6-dev
DEMO_ROOT ?= $(CURDIR)/.demo-store

.PHONY: demo test system venv clean lint bench

system: .stamp-system
.stamp-system:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(APT_PACKAGES); \
	else echo "not root or no apt-get: skipping system packages ($(APT_PACKAGES))"; fi
	touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $@

demo: system venv
	NBCONTAINER_ROOT=$(DEMO_ROOT) $(VPY) -m nbcontainer.notebook.demo

test: system venv
	$(VPY) -m pytest -q tests

lint: venv
	$(VENV)/bin/ruff check nbcontainer tests benchmarks

bench: system venv
	for b in benchmarks/bench_*.py; do $(VPY) $$b; done

clean:
	rm -rf $(VENV) .stamp-system $(DEMO_ROOT)
