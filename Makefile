# kvm.migration: every target installs what it needs, so each works on a fresh Debian 12 machine (as root).
#
#   make demo      build the lab, live-migrate the test guest with the collection, print the report
#   make test      unit tests, ansible-test sanity, ansible-lint, lab integration tests, molecule
#   make bench     migration benchmarks in the lab (kvm.migration against plain virsh), about half an hour
#   make bench-offline  offline moves of a shut-off VM (ours against scp + virsh migrate --offline)
#   make bench-evacuation  a host evacuated (ours against a serial virsh loop and all at once)
#
# KEEP=1 keeps the lab running after `make demo`; `make lab-down` removes it.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

ROOT := $(abspath .)
BUILD := $(ROOT)/build
VENV := $(ROOT)/.venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo /usr/bin/python3)
COLLECTIONS := $(BUILD)/collections
INSTALLED := $(COLLECTIONS)/ansible_collections/kvm/migration
ANSIBLE_BUNDLE := 12.3.0
VERSION := $(shell sed -n 's/^version: *//p' galaxy.yml)
TARBALL := $(BUILD)/kvm-migration-$(VERSION).tar.gz
SOURCES := $(wildcard $(shell git ls-files -co --exclude-standard -- galaxy.yml meta plugins roles playbooks docs changelogs extensions README.md 2>/dev/null))

export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(ROOT)/tests/ansible.cfg
export PYTHONPATH := $(COLLECTIONS)
export PATH := $(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

APT_PACKAGES := systemd-container debootstrap apt-cacher-ng qemu-utils busybox-static cpio xz-utils zstd \
	gcc libc6-dev pkg-config libvirt-dev python3-venv iproute2 openssh-client rsync git \
	syslinux syslinux-common mtools dosfstools binutils systemd-boot-efi ovmf

.PHONY: help deps apt venv collections install demo test unit sanity lint integration molecule bench bench-offline bench-evacuation \
	lab-up lab-down lab-status clean

help:
	@sed -n 's/^#   //p' Makefile

# ---------------------------------------------------------------- setup
deps: apt venv collections

apt: $(BUILD)/.apt
$(BUILD)/.apt:
	@mkdir -p $(BUILD)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing $$missing"; \
	  apt-get update -q >/dev/null; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: requirements.txt tests/requirements.txt tests/lab/pyproject.toml | $(BUILD)/.apt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt -r tests/requirements.txt
	# The lab tool, editable: one way to import it for the tests, the demo, the benchmarks and molecule.
	$(PY) -m pip install -q -e tests/lab
	@touch $@

collections: $(COLLECTIONS)/.deps
$(COLLECTIONS)/.deps: tests/tools/install_collections.py Makefile | $(VENV)/.installed
	$(PY) tests/tools/install_collections.py --ansible-version $(ANSIBLE_BUNDLE) --dest $(COLLECTIONS) \
		ansible.posix community.crypto
	@touch $@

# Build the tarball and install it: what runs in the tests is what users install.
install: $(INSTALLED)/MANIFEST.json
$(INSTALLED)/MANIFEST.json: $(SOURCES) | $(VENV)/.installed $(COLLECTIONS)/.deps
	@rm -f $(BUILD)/kvm-migration-*.tar.gz
	$(VENV)/bin/ansible-galaxy collection build --force --output-path $(BUILD) . >/dev/null
	$(VENV)/bin/ansible-galaxy collection install --force --no-deps -p $(COLLECTIONS) $(TARBALL) >/dev/null
	@echo "installed kvm.migration $(VERSION) into $(COLLECTIONS)"

# ---------------------------------------------------------------- lab
lab-up: deps
	$(PY) -m kvmlab up $(LAB_ARGS)

lab-down:
	@if [ -x $(VENV)/bin/kvmlab ]; then $(VENV)/bin/kvmlab down; else cd tests/lab && python3 -m kvmlab down; fi

lab-status:
	$(PY) -m kvmlab status

# ---------------------------------------------------------------- the two front doors
demo: deps install
	$(PY) tests/demo.py $(if $(KEEP),--keep,)

test: deps install
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory sanity
	$(MAKE) --no-print-directory lint
	$(MAKE) --no-print-directory integration
	$(MAKE) --no-print-directory molecule

# ---------------------------------------------------------------- suites
unit: deps install
	$(PY) -m pytest -q tests/unit

integration: deps install
	$(PY) -m pytest -q tests/integration tests/faults

# The fault suite alone (make integration runs it too, on the same lab).
faults: deps install
	$(PY) -m pytest -q tests/faults

molecule: deps install
	KVMLAB_PYTHON=$(PY) $(VENV)/bin/molecule test --all

# ansible-test wants the collection at .../ansible_collections/kvm/migration, with its tests.  It installs
# each sanity test's tools into a venv of its own, bootstrapping pip with a script from
# ci-files.testing.ansible.com; that host is unreachable here, so a local stand-in takes its cache slot.
SANITY_TREE := $(BUILD)/sanity/ansible_collections/kvm/migration
ANSIBLE_TEST_PIP = $(shell sed -n "s/.*pip='\\([0-9.]*\\)',/\\1/p" $(VENV)/lib/python3.11/site-packages/ansible_test/_internal/python_requirements.py)
GET_PIP_CACHE = $(HOME)/.ansible/test/cache/get_pip_$(subst .,_,$(ANSIBLE_TEST_PIP)).py
sanity: deps
	@mkdir -p $(dir $(GET_PIP_CACHE)) && cp tests/tools/get_pip_offline.py $(GET_PIP_CACHE)
	@rm -rf $(BUILD)/sanity && mkdir -p $(SANITY_TREE)
	@git ls-files -co --exclude-standard | grep -v -e '^build/' -e '^\.venv/' | while read -r f; do if [ -e "$$f" ]; then echo "$$f"; fi; done \
		| rsync -a --files-from=- . $(SANITY_TREE)/
	@cd $(SANITY_TREE) && git init -q && git add -A >/dev/null
	cd $(SANITY_TREE) && $(VENV)/bin/ansible-test sanity --python 3.11 --color no $(SANITY_ARGS)
	# The docsite as antsibull-docs builds it from this tree: extra docs and plugin docs render, every reference resolves.
	$(VENV)/bin/antsibull-docs lint-collection-docs --plugin-docs --check-extra-docs-refs \
		--validate-collection-refs=self --disallow-unknown-collection-refs $(SANITY_TREE)

lint: deps install
	$(VENV)/bin/ansible-lint --profile production --offline -q

# Not part of `make test`: timings belong in docs/performance.md, never in assertions.
bench: deps install
	$(PY) bench/migration_bench.py $(BENCH_ARGS)

bench-offline: deps install
	$(PY) bench/offline_bench.py $(BENCH_ARGS)

bench-evacuation: deps install
	$(PY) bench/evacuation_bench.py $(BENCH_ARGS)

clean: lab-down
	rm -rf $(BUILD) $(VENV)
