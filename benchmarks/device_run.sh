#!/usr/bin/env bash
# Prepared device check: the numbers first (elpips check-device: float32, bfloat16 and float16 against float64,
# and the 16-bit speed-ups), then the benchmark table (elpips bench: E-LPIPS in float32 and bfloat16/float16
# against channels-last VGG16 features, the barycenter and geodesic steps in every precision).
#
# On a machine with a CUDA GPU and PyTorch, from the repository root:
#     bash benchmarks/device_run.sh
# Results go to $OUT (default outputs/device): gpu.txt, device_check-*.json, the benchmark's .json/.md and the
# logs of both steps. The benchmark compares with the `lpips` package; where it cannot be installed from an
# index, put its wheel in .whl/ (python3 -m pip download --no-deps --only-binary=:all: -d .whl lpips) and this
# script installs it from there. Exit status 0 only when both steps succeed.
#
# Settings (environment): DEVICE (default cuda), QUICK=1 (smallest sizes: a smoke run, e.g. DEVICE=cpu QUICK=1
# on a laptop), PYTHON (default python3), INSTALL=0 (skip the editable install; the default on the CPU).
# --dry-run prints the commands instead of running them.
set -uo pipefail
DRY_RUN=0
for argument in "$@"; do
    case "$argument" in
        --dry-run) DRY_RUN=1 ;;
        *) echo "usage: [DEVICE=cuda|cpu] [QUICK=1] [OUT=folder] bash benchmarks/device_run.sh [--dry-run]" >&2; exit 2 ;;
    esac
done
DEVICE=${DEVICE:-cuda}
QUICK=${QUICK:-0}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-outputs/device}
if [[ "$DEVICE" == cuda* ]]; then INSTALL=${INSTALL:-1}; else INSTALL=${INSTALL:-0}; fi
check_options=(--device "$DEVICE" --out "$OUT")
bench_options=(--device "$DEVICE" --out "$OUT")
if [[ "$QUICK" == 1 ]]; then
    check_options+=(--speed-size 32)
    bench_options+=(--quick --size 32 --repeats 1)
fi

run() {  # the command, printed; run unless --dry-run
    echo "+ $*"
    [[ "$DRY_RUN" == 1 ]] || "$@"
}

[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [[ "$INSTALL" == 1 ]]; then
    if ls .whl/*.whl >/dev/null 2>&1; then
        run "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
            .whl/*.whl && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    run "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . || exit 1
fi
if [[ "$DEVICE" == cuda* && "$DRY_RUN" == 0 ]]; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
fi
if [[ "$DRY_RUN" == 1 ]]; then
    run "$PYTHON" -m elpips check-device "${check_options[@]}"
    run timeout 420 "$PYTHON" -m elpips bench "${bench_options[@]}"
    exit 0
fi
run "$PYTHON" -m elpips check-device "${check_options[@]}" 2>&1 | tee "$OUT/check.log"
check=${PIPESTATUS[0]}
run timeout 420 "$PYTHON" -m elpips bench "${bench_options[@]}" 2>&1 | tee "$OUT/bench.log"
bench=${PIPESTATUS[0]}
echo "check-device exit $check, bench exit $bench"
exit $(( check != 0 || bench != 0 ))
