#!/bin/bash
# Issue 8's GPU checks as one command for a lent device machine (one H100 or H200; about 8 of the
# 15 minutes a session is lent). From the CPU machine, after `bash benchmarks/gpu_wheels.sh`:
#   device run: command 'bash benchmarks/gpu_check.sh', carry ['.whl'], timeout_s 560
# 1. cuDNN flash attention equals the written-out einsum on the GPU (tests/test_gpu_attention.py)
#    and every attention layer of the bfloat16 U-Net runs it (tests/test_gpu_lowering.py);
# 2. MFU of the paper-scale UCF-101 model (experiments/ucf101.py: 1.17 G parameters, 16x64x64 +
#    8 images) in bfloat16 with 'auto' attention (cuDNN) at the batches that fit one GPU, then
#    with XLA's attention at the smallest of them, for the ratio (benchmarks/mfu.py).
# The model's FLOPs per example (29.20 TFLOP) were counted on the CPU machine (--mode inspect).
# tests/conftest.py sets XLA:CPU test flags, so the GPU tests run without it (--noconftest).
set -u -o pipefail
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.95
# USE_DEVICE_FLAX=1: keep the image's flax, optax and orbax (matched to its JAX) instead of ours.
[ -n "${USE_DEVICE_FLAX:-}" ] && rm -f .whl/flax-*.whl .whl/optax-*.whl .whl/orbax_checkpoint-*.whl
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax, orbax.checkpoint, grain, tensorflow_datasets;
print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())" 2>&1 | tee -a "$OUT/gpu.txt" || exit 1

timeout 150 python3 -m pytest -q -p no:cacheprovider --noconftest tests/test_gpu_attention.py \
  tests/test_gpu_lowering.py 2>&1 | tee "$OUT/tests.log"

FLOPS=${FLOPS_PER_EXAMPLE:-29.199e12}
MFU="python3 benchmarks/mfu.py --config experiments/ucf101.py --config.model.dtype=bfloat16 \
  --flops_per_example $FLOPS --steps 5"
timeout 300 $MFU --batch_sizes 2 --batch_sizes 4 --batch_sizes 8 \
  --json "$OUT/mfu_ucf101_cudnn.json" 2>&1 | grep -v '^[IW][0-9]' | tee "$OUT/mfu.log"
timeout 150 $MFU --batch_sizes 2 --config.model.attention_impl=dot_product_attention \
  --json "$OUT/mfu_ucf101_xla_attention.json" 2>&1 | grep -v '^[IW][0-9]' | tee -a "$OUT/mfu.log"
