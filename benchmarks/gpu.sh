#!/usr/bin/env bash
# The GPU check, for a lent CUDA machine, in one command under 10 minutes. Phases run in
# order, each under its own timeout; as each ends it appends one JSON line to
# $out/phases.jsonl (name, exit code, seconds, its one-line summary) and leaves its own
# JSON beside it, so a run cut short still brings back every phase that finished.
# With the machine's own python3 and torch (nothing installed); the repository on
# PYTHONPATH; logs and JSON in $OUT (the device tool's folder that comes back) or
# benchmarks/out.
#
#   bash benchmarks/gpu.sh          # on the GPU
#   bash benchmarks/gpu.sh --cpu    # every phase in its CPU form, small (tests/test_gpu_script.py)
#
# What each phase decides (the note quotes the figures):
#   env          which GPU, driver and torch the figures belong to
#   tests        the CUDA paths are right: augmentation on the device, bf16 training with fp32
#                masters, the same data plan on CPU and CUDA, deterministic algorithms as the
#                study says, stop signals mid-epoch
#   train        the engine's step time against an OpenLTH-style loop (LeNet, ResNet-20, VGG-16):
#                whether one cell keeps a GPU busy, or packing/stacking is needed
#   determinism  what deterministic algorithms cost per step (the default stays on if small),
#                and that two deterministic runs give identical weights
#   pack         aggregate images/s with k cells per GPU (k = 1..12): how many cells to pack
#   pack-mps     the same under CUDA MPS (where the node has it): whether packing needs MPS
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/out}
mkdir -p "$out" benchmarks/out
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
device=cuda
if [ "${1:-}" = "--cpu" ]; then device=cpu; fi
status=0
: > "$out/phases.jsonl"

# phase NAME TIMEOUT_S SUMMARY_PATTERN CMD...: run CMD under a timeout, log to $out/NAME.log,
# and append its line to phases.jsonl (the summary: the log's last line matching the pattern).
phase() {
  local name=$1 limit=$2 pattern=$3; shift 3
  local t0=$SECONDS rc
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  [ $rc -eq 0 ] || status=1
  "$py" - "$name" "$rc" "$((SECONDS - t0))" "$out/$name.log" "$pattern" >> "$out/phases.jsonl" <<'PY'
import json, re, sys
name, rc, seconds, log, pattern = sys.argv[1:]
lines = [l.rstrip() for l in open(log, errors="replace") if re.search(pattern, l)]
print(json.dumps({"phase": name, "rc": int(rc), "seconds": int(seconds), "timed_out": int(rc) in (124, 137),
                  "summary": lines[-3:]}))
PY
  tail -n 3 "$out/$name.log"
}

if [ "$device" = cuda ]; then
  phase env 30 "." bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; \
    $py -c \"import torch; print('torch', torch.__version__, torch.cuda.get_device_name())\""
  phase tests 120 "passed|failed|error" "$py" -m pytest -q -p no:cacheprovider -rs tests/engine/test_data.py \
    tests/engine/test_cell.py tests/engine/test_device_parity.py tests/engine/test_stopping.py -k "cuda or plan or signal"
  phase train 120 "->" "$py" benchmarks/train.py --device cuda --repeats 3
  phase determinism 60 "deterministic x" "$py" benchmarks/determinism.py --device cuda --steps 50 --repeats 3
  phase pack 110 "k=" "$py" benchmarks/pack.py --device cuda --ks 1,2,4,8,12 --repeats 1
  # the same with CUDA MPS (one daemon for the GPU, started and stopped here), where the node has it
  if command -v nvidia-cuda-mps-control >/dev/null; then
    phase pack-mps 110 "k=" bash -c "export CUDA_MPS_PIPE_DIRECTORY=/tmp/prunegen-mps CUDA_MPS_LOG_DIRECTORY=/tmp/prunegen-mps-log; \
      mkdir -p \$CUDA_MPS_PIPE_DIRECTORY \$CUDA_MPS_LOG_DIRECTORY && nvidia-cuda-mps-control -d && \
      trap 'echo quit | nvidia-cuda-mps-control' EXIT && \
      $py benchmarks/pack.py --device cuda --ks 1,2,4,8,12 --repeats 1 --out pack-mps.json"
  fi
else  # the CPU form: every phase's script, as small as it runs
  phase env 30 "." "$py" -c "import torch, platform; print('torch', torch.__version__, platform.processor() or 'cpu')"
  phase tests 300 "passed|failed|error" "$py" -m pytest -q -p no:cacheprovider -rs tests/engine/test_device_parity.py \
    -k "plan or masks"
  phase train 300 "->" "$py" benchmarks/train.py --device cpu --repeats 1 --cases lenet300-mnist --steps 5
  phase determinism 300 "deterministic x" "$py" benchmarks/determinism.py --device cpu --steps 2 --repeats 1 \
    --cases lenet300-mnist
  phase pack 300 "k=" "$py" benchmarks/pack.py --device cpu --ks 1,2 --cases lenet300-mnist --steps 5 --repeats 1
fi
cp benchmarks/out/train-$device.json benchmarks/out/determinism-$device.json benchmarks/out/pack.json \
  benchmarks/out/pack-mps.json "$out/" 2>/dev/null || true
exit $status
