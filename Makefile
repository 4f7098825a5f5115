# OpenRouter Chat: `make run` to chat, `make test` to run every check.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
APT    := DEBIAN_FRONTEND=noninteractive apt-get

.PHONY: run install install-dev system-deps lint format test screenshots bench bench-all docker clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (found " + sys.version.split()[0] + ")")'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3-venv is missing; installing it with apt-get"; rm -rf $(VENV); \
	  $(APT) update -qq && $(APT) install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(PIP) install -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt | $(BIN)/python
	$(PIP) install -r requirements-dev.txt
	@touch $@ $(VENV)/.runtime

install: $(VENV)/.runtime

install-dev: $(VENV)/.dev

run: install
	$(BIN)/python app.py

# Browser tests drive Debian's Chromium (Playwright cannot download its own here);
# the shared rate-limit tests start a real redis-server; the replica tests start their own
# throwaway PostgreSQL cluster (tests/pg_server.py) and haproxy (tests/proxy_server.py) on
# free loopback ports. Nothing is started here, and the tests use no system service.
system-deps:
	@missing=""; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v haproxy >/dev/null || missing="$$missing haproxy"; \
	if [ -n "$$missing" ]; then $(APT) update -qq && $(APT) install -y -qq $$missing; fi

# Exactly the pre-commit hooks (ruff, ruff format, mypy, end of file, trailing whitespace,
# private keys), on every file.
lint: install-dev
	$(BIN)/pre-commit run --all-files --show-diff-on-failure

format: install-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install-dev system-deps lint
	$(BIN)/python -m pytest

screenshots: install-dev system-deps
	$(BIN)/python -m tests.screenshots
	JOURNEY_SCREENSHOTS=1 $(BIN)/python -m pytest -q tests/test_e2e_live_and_address.py

# replicas.py puts two app processes behind a real haproxy: system-deps installs it.
bench: install-dev system-deps
	$(BIN)/python bench/stream_overhead.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/live_answers.py
	$(BIN)/python bench/attachments_under_load.py

bench-all: install-dev system-deps
	$(BIN)/python bench/stream_overhead.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/storage_scaling.py
	$(BIN)/python bench/usage_aggregation.py
	$(BIN)/python bench/import_under_load.py

# Needs a Docker engine (there is none on the CI machines): build, start, wait for healthy.
docker:
	docker build -t openrouter-chat .
	docker run -d --rm --name openrouter-chat-smoke -p 7860:7860 openrouter-chat
	for i in $$(seq 60); do \
	  curl -fs http://127.0.0.1:7860/ >/dev/null && break; sleep 2; done; \
	status=$$?; docker stop openrouter-chat-smoke; exit $$status

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache tests/artifacts
