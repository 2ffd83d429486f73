# fengkong: every target sets itself up (virtualenv, install, Cython build) on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUNTIME := $(VENV)/.runtime-stamp
TESTENV := $(VENV)/.test-stamp
UV_VERSION := 0.13.9
PYX    := $(wildcard cext/*.pyx cext/*.pxd gateway/*.pyx)

.PHONY: demo test bench lint clean build build-test lock system-deps

$(PY):
	$(PYTHON) -m venv $(VENV)

# Installs come from the lock files only (requirements/*.lock, exact versions), so a fresh clone
# installs what CI tested. The demo gets the runtime alone; tests add the test and bench extras
# (the benchmark harness is tested too). The project itself is installed without dependencies
# and without build isolation, so the pinned Cython and setuptools build it.
$(RUNTIME): $(PY) requirements/runtime.lock requirements/build.lock pyproject.toml setup.py
	$(PY) -m pip install -q -r requirements/build.lock -r requirements/runtime.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(RUNTIME)

$(TESTENV): $(RUNTIME) requirements/test.lock
	$(PY) -m pip install -q -r requirements/test.lock
	touch $(TESTENV)

# Refresh the lock files from the ranges in pyproject.toml and requirements/build.in, then
# review the diff and commit it: that is the only way versions change.
lock: $(PY)
	$(PY) -m pip install -q 'uv==$(UV_VERSION)'
	$(VENV)/bin/uv pip compile -q --python-version 3.11 --custom-compile-command 'make lock' \
		pyproject.toml -o requirements/runtime.lock
	$(VENV)/bin/uv pip compile -q --python-version 3.11 --custom-compile-command 'make lock' \
		pyproject.toml --extra test --extra bench --extra report -o requirements/test.lock
	$(VENV)/bin/uv pip compile -q --python-version 3.11 --custom-compile-command 'make lock' \
		requirements/build.in -o requirements/build.lock

# The extension is built in place so the checkout itself is importable (tests, CLI, demo).
build: $(RUNTIME) $(PYX)
	$(PY) setup.py -q build_ext --inplace

build-test: build $(TESTENV) system-deps

# System packages the tests drive: Debian's headless chromium and its driver (the console's
# browser tests; a CJK font so its screenshots show 中文). Installed with apt when missing (CI runs as root on Debian); anywhere else
# the target says what to install instead of failing later inside a test.
system-deps:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
				--no-install-recommends chromium chromium-driver fonts-wqy-microhei >/dev/null; \
		elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
			sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install \
				-y -qq --no-install-recommends chromium chromium-driver fonts-wqy-microhei >/dev/null; \
		else \
			echo "make test needs chromium and chromedriver (Debian: apt-get install chromium chromium-driver)" >&2; \
			exit 1; \
		fi; \
	fi

demo: build
	$(VENV)/bin/fengkong demo

test: build-test
	$(PY) -m pytest -q -p no:cacheprovider

# Micro-benchmarks, then the end-to-end harness (gateway vs bare forwarder vs direct, kill
# switch, capacity ramp, profile): a dated report under bench/reports/. BENCH_ARGS passes options.
bench: build-test
	$(PY) -m pytest bench -q --benchmark-only --benchmark-columns=min,median,mean,ops,rounds
	$(PY) -m gateway bench -- $(BENCH_ARGS)

lint: $(TESTENV)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build cext/*.c cext/*.so gateway/*.c gateway/*.so *.egg-info
