#!/usr/bin/env bash
# The GPU checks in one script, sized for a short loan of one GPU (the step timeouts add up to 640 s):
#   1. the GPU test subset (CUDA paths of the models and the augmentation),
#   2. time to accuracy on the GPU, fashion-mnist IPC 10: the fast DM family (bank + trained pool +
#      multi-formation), bank + trained pool alone, classic DM, and the reference per-class DM loop for a
#      wall budget; every snapshot scored on validation, the final sets on test under quick and under the
#      paper evaluation (5 x 1000 epochs); DSA with the reference's loops at IPC 1 to the reference length,
#   3. the speed table on the GPU: reference loops vs raydd, DM and DSA at IPC 1/10/50.
# It runs where only torch is installed (no Ray): the raydd variants distil in one process (--no-ray),
# from a checkout on PYTHONPATH (python -m raydd). Data: $RAYDD_DATA or the usual places.
# Each step writes under $WORK (default $OUT/work) as it goes, so a step cut by its timeout loses only
# itself; the last step packs the small outputs into $OUT/results.tgz (run directories without their
# snapshots) and copies the tables beside it.
#   OUT=/tmp/out WORK=/tmp/work bash jobs/gpu_check.sh
# Dry run of the same steps on a CPU, minutes instead of seconds: DEVICE=cpu SCALE=small bash jobs/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-runs/gpu-check}"
DEVICE="${DEVICE:-cuda}"
SCALE="${SCALE:-full}"
WORK="${WORK:-$OUT/work}"
mkdir -p "$OUT" "$WORK"
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" RAYDD_PROGRESS=0 PYTHONUNBUFFERED=1
if [ "$SCALE" = small ]; then
  FAST=fast=20 POOL=bank+pool=20 DM=dm=20 DSA=dsa=2 BUDGET=0.3
  VAL="--val-models 1 --val-epochs 2 --max-points 2 --set dm.pool_trainings=1 --set dm.pool_steps=2 --set dm.bank_real=16 --set dm.networks=2 --set dm.draws=1"
  SPEED="--ipc 1 --iterations 1 --warmup 1 --eval-epochs 2" PAPER="" THREADS=1
else
  FAST=fast=4000 POOL=bank+pool=2000 DM=dm=3000 DSA=dsa=1000 BUDGET=1.25 VAL="" SPEED="--ipc 1 10 50 --iterations 5 --warmup 2 --eval-epochs 20"
  PAPER=--paper-eval THREADS=4
fi
step() {  # step NAME SECONDS COMMAND...: one timed step, its output in $WORK/NAME.log
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$WORK/$name.log" 2>&1
  echo "step $name: exit $? after $((SECONDS - t0)) s (limit $limit s)" | tee -a "$WORK/steps.txt"
}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'); import os; print(os.cpu_count(), 'CPUs')"
} > "$WORK/device.txt" 2>&1
cat "$WORK/device.txt"

step tests 50 $PY -m pytest -q -p no:cacheprovider tests/test_models.py tests/test_augment.py -k cuda
TTA=(jobs/benchmark_time_to_accuracy.py --device "$DEVICE" --no-ray --threads "$THREADS" --datasets fashion-mnist
     --ipc 10 --out "$WORK/tta" --records "$WORK/tta/records.json" --plot "" $VAL $PAPER)
step tta-fast 120 $PY "${TTA[@]}" --variants fast --iterations "$FAST"
step tta-bank-pool 80 $PY "${TTA[@]}" --variants bank+pool --iterations "$POOL"
step tta-dm 70 $PY "${TTA[@]}" --variants dm --iterations "$DM"
step tta-ref 140 $PY "${TTA[@]}" --variants ref --budget-minutes "$BUDGET"
# DSA with the reference's loops at IPC 1, the reference length: what gradient matching costs to converge
step tta-dsa 120 $PY "${TTA[@]}" --variants dsa --ipc 1 --iterations "$DSA"
step speed 60 $PY jobs/benchmark_speed.py --device "$DEVICE" --methods dm dsa $SPEED --datasets fashion-mnist \
    --eval --output "$WORK/speed.md"
tar czf "$OUT/results.tgz" -C "$WORK" --exclude=snapshots --exclude=checkpoint --exclude=model_pool.safetensors --exclude=reference-state.pt .
cp "$WORK/steps.txt" "$WORK/device.txt" "$OUT/"; cp "$WORK/speed.md" "$WORK/tta/records.json" "$OUT/" 2>/dev/null
cat "$WORK/steps.txt"
tail -n 4 "$WORK"/*.log
cat "$WORK/speed.md" 2>/dev/null
cat "$WORK/tta/records.json" 2>/dev/null
