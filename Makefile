# ModelMonitor: `make demo` runs the thesis experiment end to end, `make test` runs every test.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-apiserver test-hostile test-legacy demo bench clean redis functions

# `redis` runs on every `make install`, so a redis-server removed after the venv was made comes back.
install: $(STAMP) redis

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip<26" >/dev/null
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# A redis-server binary is needed (tests and `modelmonitor run/replay` start private ones).
# Installed from Debian packages only when that can work (root, apt-get); otherwise say how.
redis:
	@if command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing redis-server from Debian packages"; \
	  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null || \
	  { echo "could not install redis-server: install it and retry"; exit 1; }; \
	else \
	  echo "redis-server (>= 6.2) is needed and not on the PATH. Install it, then retry:"; \
	  echo "  Debian/Ubuntu: sudo apt-get install redis-server    (or: sudo make redis)"; \
	  echo "  Fedora: sudo dnf install redis    macOS: brew install redis"; \
	  exit 1; \
	fi

test: install
	$(BIN)/python -m pytest -p no:cacheprovider tests

# Opt in: the operator against the upstream API server code for custom resources
# (k8s.io/apiextensions-apiserver built from Debian's Go sources, etcd from Debian), see
# docs/cluster.md. The first run downloads ~230 MB and builds for ~5 min into
# ~/.cache/modelmonitor/apiserver (MODELMONITOR_APISERVER_CACHE); later runs reuse it.
test-apiserver: install
	PYTHON=$(PYTHON) tests/apiserver/build.sh
	MODELMONITOR_APISERVER_TESTS=1 $(BIN)/python -m pytest -p no:cacheprovider tests/apiserver

# The legacy parliament runtime alone (also part of `test`): functions/legacy built as the pack/s2i
# builders do, in its own virtual environment with CloudEvents SDK 1.x (cached in
# ~/.cache/modelmonitor/legacy-parliament; ~30 s to create the first time).
test-legacy: install
	$(BIN)/python -m pytest -p no:cacheprovider tests/legacy

# The four Knative Functions projects with the modelmonitor wheel vendored into each
# (functions/<role>/vendor/), and unpacked into the legacy parliament project
# (functions/legacy/vendor/): run before `kn func build` / `kn func deploy --path functions/<role>`.
functions: install
	$(BIN)/python -m modelmonitor.cluster.function_projects

# Opt in: the hostile-input property tests (tests/test_hostile.py, tests/test_hostile_ingress.py)
# with 3,000 generated cases per test instead of `make test`'s 300 (7 minutes on 2 shared cores).
test-hostile: install
	MODELMONITOR_HOSTILE_EXAMPLES=3000 $(BIN)/python -m pytest -p no:cacheprovider tests/test_hostile.py tests/test_hostile_ingress.py

demo: install
	$(BIN)/modelmonitor demo

# The benchmark-only extra (whylogs, for scale beside replay) is installed here, not by `install`.
bench: install
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,bench]"
	$(BIN)/modelmonitor bench

clean:
	rm -rf $(VENV) build *.egg-info .cache functions/*/vendor
