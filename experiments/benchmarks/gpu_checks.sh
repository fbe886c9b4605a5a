#!/usr/bin/env bash
# The attention issue's GPU checks as one command, sized for one short session on an H100/H200:
# the GPU tests (cuDNN, Triton and Mosaic GPU kernels compiled for the device, against the dense
# reference), then the attention benchmark at the lengths the targets name.  Runs from the repository
# root with the machine's own python3 and packages (jax with CUDA, pytest); nothing is installed.
# At most 150 s of tests and 270 s of benchmark (the rows the summary needs first, the JSON rewritten
# after every row), so it ends well inside one 600 s device call and leaves time for a second run.
#
#   bash experiments/benchmarks/gpu_checks.sh OUT_DIR
#
# OUT_DIR gets gpu.txt (nvidia-smi), gpu_tests.txt, attention_gpu.txt (the table) and
# attention_gpu.json (rows and the summary: gpu_pallas_vs_cudnn_causal_16k_d64,
# gpu_window1024_vs_causal_speedup_32k).
set -uo pipefail
out=${1:?usage: gpu_checks.sh OUT_DIR}
mkdir -p "$out"
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/gpu.txt" 2>&1
python3 -c "import jax; print(jax.__version__, jax.devices())" >> "$out/gpu.txt" 2>&1

timeout 150 python3 -m pytest -p no:cacheprovider -v -rs -m gpu tests/test_attention_gpu.py 2>&1 | tee "$out/gpu_tests.txt"
tests=${PIPESTATUS[0]}
timeout 300 python3 experiments/benchmarks/attention.py --seq 16384,32768 --head-dims 64 --timeout 90 --budget 270 \
  --out "$out/attention_gpu.json" 2>&1 | tee "$out/attention_gpu.txt"
bench=${PIPESTATUS[0]}
echo "gpu tests exit $tests, benchmark exit $bench"
[ "$tests" -eq 0 ] && [ "$bench" -eq 0 ]
