#!/usr/bin/env bash
# Everything issue 16's GPU part needs, in one call on a machine with an NVIDIA GPU, its results in one folder:
#   1. the tests on the GPU: every device-parametrized test's cuda case, and the CUDA kernels' tests;
#   2. the LeNet example, 10 epochs with --device cuda;
#   3. the GPU benchmarks against PyTorch (benchmarks/gpu_norm.py), with the host syncs per step.
#
# Usage: bash benchmarks/gpu_suite.sh [OUT_DIR]       (default: $OUT, else gpu_results)
#        FASHION_MNIST=/path/to/the/four/gz/files bash benchmarks/gpu_suite.sh    (the example's data, if the
#        machine has no network; lenet.py's own search otherwise)
# It runs from the checkout with PYTHONPATH, installing nothing: the GPU machine needs numpy, numba,
# threadpoolctl, cupy, torch and pytest, and tqdm/matplotlib for the example. Exit status: 0 when every step
# passed, 1 when one failed (the others still run), 2 when there is no usable GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_results}}"
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python3}

if ! reason=$("$python" -c "import tinygradnorm as tg, sys; sys.exit(0) if tg.cuda.is_available() else print(tg.cuda.unavailable_reason())" 2>&1) || [ -n "$reason" ]; then
    echo "gpu_suite.sh: no usable GPU: ${reason:-tinygradnorm did not import}" >&2
    exit 2
fi
{ nvidia-smi 2>&1 | head -20
  "$python" -c "import sys, numpy, numba, cupy, torch; print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, 'cupy', cupy.__version__, 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} > "$out/env.txt"
cat "$out/env.txt"

status=0
echo "== 1. tests on the GPU"
"$python" -m pytest -q -p no:cacheprovider -k "cuda or test_cuda_kernels" tests 2>&1 | tee "$out/tests.txt" || status=1

echo "== 2. examples/lenet.py --device cuda, 10 epochs"
"$python" examples/lenet.py --device cuda --epochs 10 --no-progress --out "$out/lenet" \
    ${FASHION_MNIST:+--data-dir "$FASHION_MNIST"} 2>&1 | tee "$out/lenet.txt" || status=1

echo "== 3. benchmarks/gpu_norm.py"
"$python" benchmarks/gpu_norm.py --device cuda 2>&1 | tee "$out/bench.txt" || status=1

echo "gpu_suite.sh: done, status $status; results in $out"
exit $status
