# fengkong: every target sets itself up (virtualenv, install, Cython build) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PYX    := $(wildcard cext/*.pyx cext/*.pxd)

.PHONY: demo test bench lint clean build

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Cython and setuptools go into the venv too: the in-place build below runs there.
$(STAMP): $(PY) pyproject.toml setup.py
	$(PY) -m pip install -q 'Cython>=3.0' 'setuptools>=77' wheel
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# The extension is built in place so the checkout itself is importable (tests, CLI, demo).
build: $(STAMP) $(PYX)
	$(PY) setup.py -q build_ext --inplace

demo: build
	$(VENV)/bin/fengkong demo

test: build
	$(PY) -m pytest -q -p no:cacheprovider

# Micro-benchmarks, then the end-to-end harness (gateway vs bare forwarder vs direct, kill
# switch, capacity ramp, profile): a dated report under bench/reports/. BENCH_ARGS passes options.
bench: build
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds
	$(PY) -m gateway bench -- $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build cext/*.c cext/*.so *.egg-info
