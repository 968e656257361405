# respline: `make run` serves, `make test` runs the suite; each sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install run test bench bench-peers bench-profile clean

install: $(VENV)/.installed

# tests/plugins/*: provider plug-ins the tests install beside respline, as a user would
# (tests/test_plugin.py); each registers its kind by entry point.
PLUGINS := tests/plugins/ndjson_provider

$(VENV)/.installed: pyproject.toml $(PLUGINS:%=%/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	$(PY) -m pip install -q --no-deps $(PLUGINS:%=-e %)
	touch $@

run: install
	$(VENV)/bin/respline serve $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

# bench/README.md: upstream, respline and a load client on loopback; markdown on stdout,
# raw numbers in bench/results/. BENCH_QUICK=1: a small version of every scenario (~2-3 min).
BENCH_QUICK ?=
BENCH_ARGS ?=
BENCH_FLAGS = $(if $(filter-out 0,$(BENCH_QUICK)),--quick) $(BENCH_ARGS)

bench: install
	$(PY) bench/run.py $(BENCH_FLAGS)

# LiteLLM's proxy side by side in scenarios 2, 4 and 6 (installs litellm[proxy] into bench/.venv-litellm on first use)
bench-peers: install
	$(PY) bench/run.py --peers $(BENCH_FLAGS)

# py-spy on respline during scenario 1's streams: where the per-event CPU goes
bench-profile: install
	$(PY) -m pip show py-spy >/dev/null 2>&1 || $(PY) -m pip install -q py-spy
	$(PY) bench/run.py --profile $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
