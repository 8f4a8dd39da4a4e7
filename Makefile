# make run   - set everything up and start the gateway on its embedded defaults
# make test  - set everything up and run the tests
# make bench - relay throughput and latency against a direct sink (by hand, not in CI)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test bench check-config clean system-deps test-deps services

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

# Debian packages, installed only when missing: what the gateway needs to build and run
# (libmagic, ICU for PyICU), then what the tests and the README's examples use
# (swaks; promtool from prometheus; postfix for the end-to-end test).
APT_INSTALL = if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  else echo "run as root or install:$$missing" >&2; fi; \
	fi

system-deps:
	@missing=""; \
	[ -e /usr/lib/x86_64-linux-gnu/libmagic.so.1 ] || ldconfig -p | grep -q 'libmagic.so.1 ' || missing="$$missing libmagic1"; \
	command -v pkg-config >/dev/null || missing="$$missing pkg-config"; \
	pkg-config --exists icu-i18n 2>/dev/null || missing="$$missing libicu-dev"; \
	command -v swaks >/dev/null || missing="$$missing swaks"; \
	$(APT_INSTALL)

test-deps:
	@missing=""; \
	command -v promtool >/dev/null || missing="$$missing prometheus"; \
	[ -x /usr/sbin/postfix ] || missing="$$missing postfix"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	$(APT_INSTALL)

# The tests use the machine's real PostgreSQL on 127.0.0.1:5432; start it if it has stopped.
services:
	@if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  echo "starting PostgreSQL"; \
	  pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | head -1) main start || true; \
	  for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done; \
	fi

run: system-deps $(STAMP)
	$(BIN)/dlp-gateway serve $(if $(CONFIG),--config $(CONFIG))

check-config: $(STAMP)
	$(BIN)/dlp-gateway check-config $(if $(CONFIG),--config $(CONFIG))

test: system-deps test-deps services $(STAMP)
	$(BIN)/python -m pytest -q -n 2

bench: system-deps $(STAMP)
	$(BIN)/python -m tests.bench.relay_bench

clean:
	rm -rf $(VENV) var build *.egg-info
