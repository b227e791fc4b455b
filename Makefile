# Two commands on a fresh Debian 12 / Ubuntu 22.04+ machine, as root:
#   make run    install everything, migrate, create an admin, start the whole stack
#   make demo   the same, plus a small shop on loopback for obsweb to discover (demo/run.py)
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
# The demo shop's servers (demo/run.py).
APT_DEMO := nginx postgresql openssl
# bpftrace: bench/peers/syscalls.bt, a peer in bench/overhead.py (bcc's tools come with bpfcc-tools).
APT_BENCH := bpftrace
STAMP := .local/stamps
# What `make run` starts; `make demo` adds the demo shop (Procfile.demo) to the same stack.
PROCFILE := Procfile
RUN_NOTE := nothing to look at yet? stop, then make demo: the stack plus a small shop that sends it traffic

.PHONY: run demo test test-postgres lint bench deps test-deps kernel migrate admin clean

run: deps kernel migrate admin
	@echo
	@echo "  open the obsweb dashboard: http://127.0.0.1:8000/"
	@echo "  log in as 'admin', password in $(CURDIR)/.local/admin-password"
	@echo "  API token: $(PY) manage.py apitoken admin"
	@echo "  $(RUN_NOTE)"
	@echo "  stop everything with Ctrl-C"
	@echo
	$(PY) scripts/redis_acl.py .local/redis  # Redis users and passwords (SECURITY.md: Redis)
	$(VENV)/bin/honcho start -f $(PROCFILE)

demo: PROCFILE := .local/Procfile.demo
demo: RUN_NOTE := demo shop: https://127.0.0.1:8443/catalog (web, shop-api, worker, postgresql, redis), on the dashboard within a minute
demo: $(STAMP)/apt-demo .local/Procfile.demo run

.local/Procfile.demo: Procfile Procfile.demo | $(STAMP)
	cat Procfile Procfile.demo > $@

# Tests that load BPF programs run one at a time: every probe worker traces the whole machine, so
# two at once would see each other's traffic. The rest run on two processes (pytest-xdist).
test: test-deps kernel lint
	OBSWEB_REQUIRE_BPF=1 $(PY) -m pytest -q -p no:cacheprovider -n 2 -m "not bpf" --durations=10
	OBSWEB_REQUIRE_BPF=1 $(PY) -m pytest -q -p no:cacheprovider -m bpf --durations=15
	$(MAKE) test-postgres

# The modules whose database work differs most between SQLite and PostgreSQL (bulk upserts,
# concurrent ingesters, window queries, retention), again on a throwaway PostgreSQL
# (tests/with_postgres.py). Not every database test: that would push `make test` past 20 minutes on
# this 2-core machine. test_incident_concurrency.py runs on its own PostgreSQL already.
POSTGRES_TESTS := tests/test_api_*.py tests/test_ingest*.py tests/test_metrics_endpoint.py \
	tests/test_prune_telemetry.py tests/test_incident_evaluation.py tests/test_incident_lifecycle.py
test-postgres: test-deps
	$(PY) -m tests.with_postgres $(PY) -m pytest -x -q -p no:cacheprovider $(POSTGRES_TESTS)

lint: test-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# One table and JSON results in bench/results/ (bench/README.md); BENCH_ARGS=--quick for a smoke run.
bench: test-deps kernel $(STAMP)/apt-bench
	$(PY) bench/run.py $(BENCH_ARGS)

$(STAMP):
	mkdir -p $(STAMP)

$(STAMP)/apt-run: | $(STAMP)
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_RUN)
	touch $@

$(STAMP)/apt-demo: $(STAMP)/apt-run
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_DEMO)
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

$(STAMP)/apt-bench: $(STAMP)/apt-test
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_BENCH)
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
