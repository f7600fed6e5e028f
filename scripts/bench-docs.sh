#!/usr/bin/env bash
# Regenerates every generated section of docs/benchmarks.md, one benchmark at a time (they would skew
# each other's CPU figures if run together). Each writes only its own section, with the commit, the load
# average and its same-run baselines. `make fuzz-long` (25 min) writes the long fuzzing campaign's section.
# Usage: bash scripts/bench-docs.sh [section ...]   (default: all, in the order below)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${TAILGUARD_PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
declare -A RUN=(
  [product]="npx tsx ts-core/bench/product.ts --trace-gc --breakdown --scaling --write-doc"
  [kernel]="npx tsx ts-core/bench/kernel.ts --write-doc"
  [ingest]="npx tsx ts-core/bench/ingest.bench.ts --write-doc"
  [topk]="npx tsx ts-core/bench/topk.bench.ts --write-doc"
  [validate]="npx tsx ts-core/bench/validate.bench.ts --write-doc"
  [fuzz]="npx tsx ts-core/bench/fuzz.ts --cases 100000 --socket-cases 2000 --write-doc fuzz"
  [load]="npx tsx ts-core/bench/load.ts --write-doc"
  [live-page]="npx tsx ts-core/bench/ui.bench.ts --write"
  [round-trip]="$PY bench/rtt.py --write-doc"
  [overhead]="$PY bench/overhead.py --write-doc"
  [sketch]="$PY bench/sketch_bench.py --write-doc"
)
ORDER=(product kernel ingest topk validate fuzz load live-page round-trip overhead sketch)
for name in "${@:-${ORDER[@]}}"; do
  [[ -n "${RUN[$name]:-}" ]] || { echo "bench-docs: unknown section '$name' (one of: ${ORDER[*]})" >&2; exit 2; }
  echo "== $name: ${RUN[$name]}"
  start=$SECONDS
  ${RUN[$name]}
  echo "== $name done in $((SECONDS - start)) s"
done
