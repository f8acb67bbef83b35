# Set-up and entry points. `make demo` and `make test` each create .venv and install what they need.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint clean niivue niivue-check

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch lies on this machine's disk; ask for it first so nothing pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	# constraints.txt pins the numerical stack the committed figures were measured with.
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/vetseg demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

# NiiVue for `vetseg review` is committed in src/vetseg/server/static/vendor/ (so clones, wheels
# and `make test` need no npm); these re-fetch it with `npm ci` from the pinned package-lock.json.
WEB := src/vetseg/server/web

niivue:
	$(WEB)/vendor_niivue.sh

niivue-check:
	$(WEB)/vendor_niivue.sh --check

clean:
	rm -rf $(VENV) demo_out $(WEB)/node_modules
