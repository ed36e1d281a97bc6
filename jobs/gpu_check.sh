#!/usr/bin/env bash
# The GPU checks in one script, sized for a short loan of one GPU (at most 15 minutes: the timeouts below add up to 900 s):
#   1. the GPU test subset (bf16/channels_last equality, --device cuda paths),
#   2. the speed table on the GPU: reference loop vs raydd, DM and DSA at IPC 1/10/50,
#   3. one paper-preset DM run on fashion-mnist at IPC 10 (the full 20 000 iterations, 5 x 1000-epoch
#      evaluation), and a paper-preset DSA run at IPC 10 cut to 200 iterations (the full 1000 would
#      not fit the loan; the cut is written into the output),
#   4. the fast DM family's time-to-accuracy curve (bank + trained pool + multi-formation) beside the
#      reference loop, fashion-mnist IPC 10, a few minutes each.
# Everything it prints goes to $OUT (or runs/gpu-check) so it can be committed as it is:
#   OUT=/tmp/out bash jobs/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
mkdir -p "$OUT"
PY=.venv/bin/python
export RAYDD_PROGRESS=0
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} > "$OUT/device.txt" 2>&1
timeout 120 $PY -m pytest -q tests/test_models.py -k cuda > "$OUT/tests-gpu.txt" 2>&1
timeout 180 $PY jobs/benchmark_speed.py --device cuda --methods dm dsa --ipc 1 10 50 --datasets fashion-mnist \
    --iterations 5 --warmup 2 --eval --eval-epochs 20 --output "$OUT/speed-gpu.md" > "$OUT/speed-gpu.log" 2>&1
timeout 240 .venv/bin/raydd run --preset paper --method dm --ipc 10 --device cuda --no-preprocess --quiet \
    --out "$OUT/paper-dm-ipc10" > "$OUT/paper-dm-ipc10.log" 2>&1
timeout 120 .venv/bin/raydd run --preset paper --method dsa --ipc 10 --iterations 200 --device cuda --no-preprocess \
    --quiet --out "$OUT/paper-dsa-ipc10-200it" > "$OUT/paper-dsa-ipc10-200it.log" 2>&1
timeout 240 $PY jobs/benchmark_time_to_accuracy.py --device cuda --datasets fashion-mnist --ipc 10 \
    --variants ref,fast --iterations fast=1000 --budget-minutes 1 --out "$OUT/time-to-accuracy" \
    --records "$OUT/time-to-accuracy.json" --plot "$OUT/time-to-accuracy.png" > "$OUT/time-to-accuracy.log" 2>&1
tail -n 5 "$OUT"/*.log "$OUT"/*.txt
