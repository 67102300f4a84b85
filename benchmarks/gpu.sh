#!/usr/bin/env bash
# The benchmarks' tables on a GPU machine, as one prepared command: first the widths table
# (`Reverse()` against training at hidden 50-400 and 100-100, T=200 and 2000, and vmapped at N=16
# and 64; issue 17 asks for it first), then the population step against a search chunk (issue 14's
# throughput; populations.py section 1), then make bench's tables.
#
# For a machine that already has jax with CUDA, optax, flax, numpy and scikit-learn installed and no
# internet (this repo's .venv is CPU-only and is not built there): it imports hypergrad from the
# checkout. Writes reverse_widths_gpu.md, populations_gpu.md, RESULTS_gpu.md and the run's log to $OUT when set (a lent
# device machine returns what lands there), else to benchmarks/. The widths and bench tables time five calls
# per row (bench.py's own default is eleven; a lent GPU is not shared, and on it a T=2000 call is launch-bound). Every table
# is written as its section ends, so a run stopped at a time limit keeps what it measured; the
# widths run ends with its profile (kernels per training step by class, from the device's streams).
# A step that fails is logged and the next one still runs. On an H200 (2026-12-04) the widths took
# 219 s without the profile and the bench 173 s (the populations step is not timed there yet):
# give it the 10-minute limit.
#
#     benchmarks/gpu.sh            # then copy the two tables beside benchmarks/RESULTS.md (see RESULTS_gpu.md, gpu_profile.md)
#     benchmarks/gpu.sh --smoke    # the same steps at tiny sizes, on any machine: the script's structure
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-benchmarks}"
python="${PYTHON:-python3}"
if [ "${1:-}" = "--smoke" ]; then
    widths_args=(--smoke); populations_args=(--smoke); bench_args=(--quick)
else
    widths_args=(--repeats 5); populations_args=(); bench_args=(--repeats 5)
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
log="$out/bench_gpu.log"
"$python" -c "import jax; d = jax.devices()[0]; print('jax', jax.__version__, d.platform, d.device_kind)" 2>&1 | tee "$log"
status=0
step() {  # step NAME COMMAND...: run, log its seconds and exit status, carry on either way
    local name="$1" start=$SECONDS; shift
    echo "== $name: $*" | tee -a "$log"
    "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
    [ "$rc" = 0 ] || status=1
}
step widths "$python" benchmarks/reverse_widths.py "${widths_args[@]}" --out "$out/reverse_widths_gpu.md"
step populations "$python" benchmarks/populations.py "${populations_args[@]}" --skip-quality --cpu-devices 1 \
    --out "$out/populations_gpu.md"
step bench "$python" benchmarks/bench.py "${bench_args[@]}" --out "$out/RESULTS_gpu.md"
exit $status
