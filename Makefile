# Two commands on a fresh Debian 12 / Ubuntu 22.04+ machine, as root:
#   make run    install everything, migrate, create an admin, start the whole stack
#   make test   install what the tests need and run the whole suite (real kernel, real servers)
SHELL := /bin/bash
PYTHON := /usr/bin/python3
VENV := .venv
PY := $(VENV)/bin/python
ARCH := $(shell dpkg --print-architecture 2>/dev/null || echo amd64)
# chromium: the Celery worker prints incident reports to PDF with it (obsweb/incidents/report/pdf.py).
APT_RUN := python3-venv python3-bpfcc bpfcc-tools redis-server redis-tools iproute2 procps chromium
# poppler-utils: pdftoppm, which the report tests render PDF pages with.
# prometheus: tests/test_prometheus_scrape.py runs its own /usr/bin/prometheus against /metrics.
# nftables: tests/test_kernel_resources.py drops packets on a veth pair to cause retransmits.
APT_TEST := nginx wrk curl bpftool openssl postgresql mariadb-server mariadb-client poppler-utils prometheus nftables
STAMP := .local/stamps

.PHONY: run test lint bench deps test-deps kernel migrate admin clean

run: deps kernel migrate admin
	@echo
	@echo "  obsweb dashboard: http://127.0.0.1:8000/"
	@echo "  admin user 'admin', password in $(CURDIR)/.local/admin-password"
	@echo "  API token: $(PY) manage.py apitoken admin"
	@echo "  stop everything with Ctrl-C"
	@echo
	$(VENV)/bin/honcho start -f Procfile

test: test-deps kernel lint
	OBSWEB_REQUIRE_BPF=1 $(PY) -m pytest -q

lint: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: test-deps kernel
	$(PY) bench/overhead.py
	$(PY) bench/dashboard.py

$(STAMP):
	mkdir -p $(STAMP)

$(STAMP)/apt-run: | $(STAMP)
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_RUN)
	touch $@

$(STAMP)/apt-test: $(STAMP)/apt-run
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_TEST)
	touch $@

# The venv uses Debian's python3 so Debian's bcc package (python3-bpfcc) can be linked in:
# the PyPI package called "bcc" is unrelated.
$(PY): $(STAMP)/apt-run
	$(PYTHON) -m venv $(VENV)
	ln -sfn /usr/lib/python3/dist-packages/bcc $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/bcc
	$(PY) -m pip install -q --upgrade pip

$(STAMP)/pip-run: requirements.txt $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(STAMP)/pip-test: requirements-test.txt $(STAMP)/pip-run
	$(PY) -m pip install -q -r requirements-test.txt
	touch $@

deps: $(STAMP)/pip-run

test-deps: $(STAMP)/pip-test $(STAMP)/apt-test

kernel: $(STAMP)/apt-run
	scripts/setup-kernel.sh

migrate: deps
	$(PY) manage.py migrate --noinput

admin: migrate
	$(PY) manage.py ensure_admin

clean:
	rm -rf $(VENV) .local
