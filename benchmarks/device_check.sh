#!/usr/bin/env bash
# Issue 6's GPU measurements in one go, on a GPU machine that has JAX but no TensorFlow.
# Run from the repository root with $OUT set (results land there), the wheels that machine
# lacks in .whl/ (keras, optree, namex, pydantic and its needs) and the CIFAR-10 archive in
# data/:
#     bash benchmarks/device_check.sh
# Each step has its own time limit, so one that overruns does not cost the others.
set -u
. benchmarks/device_env.sh
# Logs are packed into $OUT/logs.tgz (a device call brings back at most 8 files).
LOGS=${LOGS:-/tmp/device-logs}
mkdir -p "$LOGS"
# SMALL=1: a few images and epochs, to check the script itself on a CPU.
if [ "${SMALL:-0}" = 1 ]; then
  PIPE=(--images 512 --epochs 1) LONG=(--limit 300 --epochs 3) SHORT=(--limit 300 --epochs 2)
  WARMUP=1 LONG_BUDGET=0 SHORT_BUDGET=0
else
  PIPE=(--images 20480 --epochs 5 --generator-epochs 1) LONG=(--epochs 60) SHORT=(--epochs 20)
  WARMUP=2 LONG_BUDGET=230 SHORT_BUDGET=190
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, keras; print(jax.__version__, jax.devices(), keras.__version__)" \
  2>&1 | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "^$" > "$LOGS/$name.log"
  echo "$name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$OUT/steps.txt"
}

# Decode the archive once (later steps read the cache).
step decode 60 python3 -c "from hpsearch.datasets import load_dataset; load_dataset('folder', '$DATA')"

# Wave 1, side by side on the one GPU (each process takes a share of its memory; timings are
# then shared-GPU timings, the accuracies are not affected): 20-epoch runs of the combined
# configuration's factors (batch norm before the activation, he_normal, L2, standard
# augmentation, cosine schedule, bfloat16, XLA) on the resnet9 preset, without dropout,
# keeping the epoch of the best validation accuracy. 85% validation accuracy within 20 epochs?
# The reference's own network, four times as wide, levelled off near 0.89 (2026-11-27: 0.8471
# in 20 epochs, test 0.8879 after 120; benchmarks/RESULTS.md).
R9="--set architecture=resnet9 --set dropout=none --set monitor=val_accuracy"
declare -A VARIANT=(
  [r9-adam-b256]="$R9"
  [r9-adam-b128]="$R9 --set batch_size=128"
  [r9-adamw-b256]="$R9 --set optimizer=adamw --set learning_rate=0.002 --set weight_decay=none
    --set warmup_epochs=1"
  [r9-sgd05-b256]="$R9 --set optimizer=sgd_nesterov --set learning_rate=0.05
    --set warmup_epochs=$WARMUP --set weight_decay_magnitude=0.0005"
)
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.2
for name in "${!VARIANT[@]}"; do
  # shellcheck disable=SC2086  # the variant's words are separate arguments
  step "$name" 240 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${SHORT[@]}" \
    --budget "$SHORT_BUDGET" ${VARIANT[$name]} &
done
wait
tar czf "$OUT/logs.tgz" -C "$LOGS" .
unset XLA_PYTHON_CLIENT_MEM_FRACTION

# Wave 2, alone on the GPU: the best model, the variant with the best validation accuracy
# above, trained for more epochs.
winner=r9-adam-b256 top=0
for name in "${!VARIANT[@]}"; do
  best=$(grep -o "best validation accuracy | [0-9.]*" "$LOGS/$name.log" | grep -o "[0-9.]*$")
  echo "$name: best validation accuracy ${best:-none}" | tee -a "$OUT/steps.txt"
  if awk "BEGIN {exit !(${best:-0} > $top)}"; then winner=$name top=$best; fi
done
echo "long run: $winner" | tee -a "$OUT/steps.txt"
# shellcheck disable=SC2086
step "long-$winner" 290 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${LONG[@]}" \
  --budget "$LONG_BUDGET" ${VARIANT[$winner]}

# End to end on the GPU (measured on an H100 on 2026-11-27; PIPELINE=1 measures it again):
# plain, in-model augmentation, ImageDataGenerator feeding fit.
if [ "${PIPELINE:-0}" = 1 ]; then
  step pipeline 85 python3 benchmarks/input_pipeline.py --data-dir "$DATA" --end-to-end-only \
    "${PIPE[@]}" --precision mixed_bfloat16 --jit-compile
fi
tar czf "$OUT/logs.tgz" -C "$LOGS" .
