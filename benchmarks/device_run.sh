#!/usr/bin/env bash
# The one prepared GPU run (issue 6, item 7): correctness first, then the benchmark table on CUDA.
#
# For a session lent a GPU machine through the `device` tool. That machine has PyTorch but not the `lpips`
# package (the benchmark's LPIPS peer): carry it as a wheel. Once, on the development machine, in the repo root:
#     echo /.whl/ >> .git/info/exclude
#     python3 -m pip download --no-deps --only-binary=:all: -d .whl lpips
# Then call the tool's `run` with carry [".whl"], timeout_s 540 and the command
#     bash benchmarks/device_run.sh
# Results come back from $OUT (device_check-*.json, the benchmark's .json/.md, a log).
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
