#!/usr/bin/env bash
# The GPU check in one run, a few minutes on one GPU: the CUDA tests (tests/test_export_gpu.py),
# then every GPU figure (benchmarks/bench_gpu.py), each bounded in time, their output written
# to DIR (default gpu-check/) as it comes. ctopt is read from this checkout, not installed: the
# Python it runs ($PYTHON, default python3) needs a CUDA build of torch, numpy, scipy, sympy,
# pytest and hypothesis. Further arguments go to bench_gpu.py (e.g. --quick).
#
#   bash benchmarks/gpu_check.sh [DIR [BENCH_ARGS...]]   # exit status non-zero if a part failed
set -uo pipefail
cd "$(dirname "$0")/.."
dir="${1:-gpu-check}"
mkdir -p "$dir"
py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$py" -c "import sys, torch; print(sys.version.split()[0], torch.__version__,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')" | tee "$dir/env.txt"
# the CUDA tests alone (no doctests, no marker filter); they skip where CUDA is absent
timeout "${GPU_TESTS_S:-240}" "$py" -m pytest -q -rs -p no:cacheprovider -o addopts="" \
  tests/test_export_gpu.py 2>&1 | tee "$dir/gpu_tests.log"
tests=${PIPESTATUS[0]}
timeout "${GPU_BENCH_S:-300}" "$py" benchmarks/bench_gpu.py "${@:2}" 2>&1 | tee "$dir/bench_gpu.md"
bench=${PIPESTATUS[0]}
echo "gpu_check: tests exit $tests, bench exit $bench" | tee -a "$dir/env.txt"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
