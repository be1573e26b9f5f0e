#!/usr/bin/env bash
# The GPU side of the reliability and scale-out work, in one call on a GPU machine
# that already has torch, jax, pytest and hypothesis (nothing is installed):
#   bash benchmarks/device_checks.sh            # results under $OUT (default /tmp/crossgrad-device)
# 1. the memory, jit, distributed, streaming, fuzz and parity tests on the GPU;
# 2. chunk_size="auto" against a real out-of-memory error: 200,000 per-sample MLP
#    Hessians under a budget far above the device, so the retry in halves does the work;
# 3. the scaling case of make bench (says so when there is one device).
set -u
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/crossgrad-device}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv 2>&1 | tee "$OUT/device.txt"
"$PY" -c "import torch, jax; print('torch', torch.__version__, 'jax', jax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/device.txt"
timeout "${TESTS_S:-200}" "$PY" -m pytest -q -p no:cacheprovider ${TESTS:-tests/test_memory.py tests/test_jit.py \
    tests/test_distributed.py tests/test_streaming.py tests/test_fuzz.py} 2>&1 | tail -40 | tee "$OUT/tests.txt"
timeout "${OOM_S:-150}" "$PY" examples/memory_bounded.py --batch "${OOM_BATCH:-200000}" --budget 1e12 2>&1 | tail -40 | tee "$OUT/oom_retry.txt"
timeout "${SCALING_S:-90}" "$PY" -m benchmarks -k scaling 2>&1 | tail -30 | tee "$OUT/scaling.txt"
cp benchmarks/results/nvidia-*"$(date +%F)".md "$OUT/" 2>/dev/null || true
