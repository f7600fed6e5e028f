# Two entry points: `make demo` (the main job) and `make test` (every test).
# Both set themselves up on a fresh clone.
SHELL := /bin/bash
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export TAILGUARD_PYTHON := $(abspath $(PY))
# Tiny CPU models run faster on one torch thread than fighting over two cores (about 5x here).
OMP_NUM_THREADS ?= 1
export OMP_NUM_THREADS

.PHONY: setup setup-node setup-python setup-browser demo test test-ts test-py test-long dist bench bench-docs fuzz fuzz-long load clean

setup: setup-node setup-python

setup-node: node_modules/.stamp
node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	node -e "require('zeromq'); require('msgpackr')" # the prebuilt zeromq binary must load
	touch $@

setup-python: .venv/.stamp
.venv/.stamp: pyproject.toml
	python3 -m venv .venv
	# setuptools >= 77 builds the wheel (SPDX license); `make dist` and the packaging test build without isolation.
	$(PY) -m pip install -q --upgrade pip 'setuptools>=77'
	# The CPU wheel first, or pip pulls a multi-GB CUDA build for trl's torch dependency.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[trl,test]'
	touch $@

# Debian's Chromium for the dashboard browser test (playwright's own download does not work offline).
setup-browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "warning: chromium could not be installed; browser test will fail"

demo: setup
	$(PY) examples/demo.py

test: setup setup-browser test-ts test-py

test-ts:
	npx vitest run

test-py:
	$(PY) -m pytest -q

# The 2000-step, 8-rank report test (about 3 min of engine time on 2 cores); `make test` runs it at 250 steps.
test-long: setup setup-browser
	npm run test:long

# The release artifacts in dist/: the npm tarball (bundled engine + .d.ts), the sdist, and the platform wheel
# that carries the engine. test/test_packaging.py (part of `make test`) installs and exercises the same builds.
dist: setup
	npm pack --pack-destination dist
	$(PY) -c "from setuptools import build_meta as b; print('dist/' + b.build_sdist('dist'))"
	$(PY) -m pip wheel . --no-deps --no-build-isolation -w dist
	rm -rf build
	@ls -l dist/*.tgz dist/*.tar.gz dist/*.whl

bench: setup
	npm run bench

# Every generated section of docs/benchmarks.md, one benchmark after the other (about 10 min on 2 cores);
# `make bench-docs SECTIONS="ingest topk"` runs only those.
bench-docs: setup setup-browser
	bash scripts/bench-docs.sh $(SECTIONS)

fuzz: setup
	npm run fuzz

# >= 10^6 cases over a real socket (about 20 min on 2 cores; 3.8% of generated cases have no frames), the engine's RSS and run-dir size sampled
# every 50,000 cases (docs/reliability.md, "Fuzzing"). FUZZ_SEED picks the seed.
fuzz-long: setup
	npx tsx ts-core/bench/fuzz.ts --cases 1050000 --socket-cases 1050000 --in-process-cases 200000 --sample-every 50000 $(if $(FUZZ_SEED),--seed $(FUZZ_SEED),) --json fuzz-long.json --write-doc fuzz-long

load: setup
	npm run load

clean:
	rm -rf node_modules .venv runs out test-artifacts dist build
