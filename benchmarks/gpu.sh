#!/usr/bin/env bash
# Issue 6's GPU checks in one command, for a lent CUDA machine (one short device call):
# the CUDA tests, the training benchmark (ResNet-20, VGG-16, LeNet vs the reference) and
# the packing benchmark. Runs with the machine's own python3 and its torch (nothing is
# installed); the repository is put on PYTHONPATH. Logs and JSON go to $OUT (the device
# tool's folder that comes back) or benchmarks/out. About 5 minutes on an H200.
#
#   bash benchmarks/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out" benchmarks/out
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"; } 2>&1 | tee "$out/gpu.txt"
# the CUDA tests: augmentation on the device; a ResNet-20 trained channels_last in bf16;
# the same data plan on CPU and CUDA; deterministic algorithms as the study says; stop signals
timeout 240 "$py" -m pytest -q -p no:cacheprovider -rs tests/engine/test_data.py tests/engine/test_cell.py \
    tests/engine/test_device_parity.py tests/engine/test_stopping.py -k "cuda or plan or signal" \
    2>&1 | tee "$out/tests.log" || status=1
timeout 300 "$py" benchmarks/train.py --device cuda --repeats 5 2>&1 | tee "$out/train.log" || status=1
timeout 180 "$py" benchmarks/pack.py --device cuda 2>&1 | tee "$out/pack.log" || status=1
cp benchmarks/out/train-cuda.json benchmarks/out/pack.json "$out/" 2>/dev/null || true
exit $status
