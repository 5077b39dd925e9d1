# Two commands on a fresh Debian/Ubuntu machine as root: `make demo` and `make test`.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PACKAGES := busybox-static mmdebstrap podman skopeo umoci runc crun uidmap docker-registry \
	apache2-utils chromium zstd xz-utils iproute2 nftables hyperfine libseccomp2 gcc libc6-dev
DEMO_ROOT ?= $(CURDIR)/.demo-store

.PHONY: demo test system venv clean lint bench screenshots

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

# pytest exits 5 when it collected no test: a failure of the suite, not a pass (make fails on it too).
test: system venv
	@$(VPY) -m pytest -q tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "no tests were collected"; fi; \
	exit $$rc

# The browser test keeps its screenshots in a tmp dir; this refreshes the README's pictures in docs/.
screenshots: system venv
	NBC_SCREENSHOTS=docs $(VPY) -m pytest -q tests/browser

# Both checkers run, so one run shows every finding; the versions are pinned in pyproject.toml.
lint: venv
	@rc=0; \
	$(VENV)/bin/ruff check nbcontainer tests benchmarks tools || rc=1; \
	$(VENV)/bin/mypy nbcontainer || rc=1; \
	exit $$rc

bench: system venv
	for b in benchmarks/bench_*.py; do $(VPY) $$b; done

clean:
	rm -rf $(VENV) .stamp-system $(DEMO_ROOT)
