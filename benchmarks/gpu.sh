#!/usr/bin/env bash
# make bench's tables on a GPU machine, as one prepared command.
#
# For a machine that already has jax with CUDA, optax, flax, numpy and scikit-learn installed and no
# internet (this repo's .venv is CPU-only and is not built there): it imports hypergrad from the
# checkout. Writes RESULTS_gpu.md and the run's log to $OUT when set (a lent device machine
# returns what lands there), else to benchmarks/. Five timed calls per hypergradient row instead of
# eleven (a lent GPU is not shared, and on it a T=2000 call is launch-bound, about a second): by
# estimate 5-7 minutes; give it the 10-minute limit. The tables are written at the end only; the log
# shows each section as it ends.
#
#     benchmarks/gpu.sh            # then copy RESULTS_gpu.md beside benchmarks/RESULTS.md
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks}"
python="${PYTHON:-python3}"
"$python" -c "import jax; d = jax.devices()[0]; print('jax', jax.__version__, d.platform, d.device_kind)" | tee "$out/bench_gpu.log"
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 \
    "$python" benchmarks/bench.py --repeats 5 --out "$out/RESULTS_gpu.md" 2>&1 | tee -a "$out/bench_gpu.log"
