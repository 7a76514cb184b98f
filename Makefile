# Two commands do everything on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# The CPU build of torch lies on local disk; installing it first stops any
# later requirement from pulling a multi-GB CUDA wheel (see reference/stack.md).
TORCH_SPEC ?= torch==2.13.0
# espeak-ng and sox speak the miniature corpora; headless Chromium renders the report
# in its test (tests/test_report.py fails, naming this target, when it is missing).
APT_PACKAGES := espeak-ng sox chromium-headless-shell

.PHONY: test demo setup system-deps bench clean

$(VENV)/.installed: pyproject.toml
	@command -v python3 >/dev/null || { echo "python3 is required"; exit 1; }
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev,bench,local,train]"
	touch $@

system-deps:
	@missing=""; for tool in $(APT_PACKAGES); do command -v $$tool >/dev/null || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_PACKAGES) >/dev/null; \
	fi

setup: system-deps $(VENV)/.installed

test: setup
	$(VENV)/bin/pytest -n 2 --dist loadfile -q

demo: setup
	$(VENV)/bin/mooer-data demo --out demo-out

bench: setup
	$(PY) benchmarks/bench_prepare.py
	$(PY) benchmarks/bench_sample.py
	$(PY) benchmarks/bench_pseudolabel.py
	$(PY) benchmarks/bench_shard.py
	$(PY) benchmarks/bench_load.py
	$(PY) benchmarks/bench_train.py

clean:
	rm -rf $(VENV) demo-out .pytest_cache
