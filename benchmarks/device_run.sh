#!/usr/bin/env bash
# Prepared GPU check: the numbers first (elpips check-device), then the benchmark table on CUDA (elpips bench).
#
# Run from the repository root on a machine with a CUDA GPU and PyTorch:
#     bash benchmarks/device_run.sh
# Results go to $OUT (default outputs/device): gpu.txt, device_check-*.json, the benchmark's .json/.md and the
# logs of both steps. The benchmark compares with the `lpips` package; where it cannot be installed from an
# index, put its wheel in .whl/ (python3 -m pip download --no-deps --only-binary=:all: -d .whl lpips) and this
# script installs it from there. Exit status 0 only when both steps succeed.
set -uo pipefail
OUT=${OUT:-outputs/device}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -m elpips check-device --device cuda --out "$OUT" 2>&1 | tee "$OUT/check.log"
check=${PIPESTATUS[0]}
timeout 420 python3 -m elpips bench --device cuda --out "$OUT" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
echo "check-device exit $check, bench exit $bench"
exit $(( check != 0 || bench != 0 ))
