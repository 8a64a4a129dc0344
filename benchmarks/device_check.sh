#!/usr/bin/env bash
# Issue 6's GPU measurements in one go, on a GPU machine that has JAX but no TensorFlow.
# Run from the repository root with $OUT set (results land there), the wheels that machine
# lacks in .whl/ (keras, optree, namex, pydantic and its needs) and the CIFAR-10 archive in
# data/:
#     bash benchmarks/device_check.sh
# Each step has its own time limit, so one that overruns does not cost the others.
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT" /tmp/site
WHEELS=${WHEELS:-.whl}  # WHEELS=none where everything is installed
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
export HPSEARCH_RESULTS=$OUT/RESULTS-gpu.md
DATA=${DATA:-data/cifar10-jpeg.tar.gz}
# SMALL=1: a few images and epochs, to check the script itself on a CPU.
if [ "${SMALL:-0}" = 1 ]; then
  PIPE=(--images 512 --epochs 1) LONG=(--limit 300 --epochs 2) SHORT=(--limit 300 --epochs 2)
  WARMUP=1
else
  PIPE=(--images 20480 --epochs 5 --generator-epochs 1) LONG=(--epochs 70) SHORT=(--epochs 20)
  WARMUP=2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, keras; print(jax.__version__, jax.devices(), keras.__version__)" \
  2>&1 | tee -a "$OUT/gpu.txt"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local started=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v "^$" > "$OUT/$name.log"
  echo "$name: exit ${PIPESTATUS[0]} after $((SECONDS - started)) s" | tee -a "$OUT/steps.txt"
}

# Decode the archive once (later steps read the cache).
step decode 60 python3 -c "from hpsearch.datasets import load_dataset; load_dataset('folder', '$DATA')"
# The combined configuration four times as wide with lighter dropout, keeping the epoch of the
# best validation accuracy: the best model (2026-11-27 on an H100: 70 epochs in 110 s).
WIDE=(--set width=4 --set dropout=0.2/0.3/0.4 --set monitor=val_accuracy)
step wide-70 170 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${LONG[@]}" "${WIDE[@]}"
# The same in 20 epochs: 85% validation accuracy within 20 epochs?
step wide-20 100 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${SHORT[@]}" "${WIDE[@]}"
# End to end on the GPU: plain, in-model augmentation, ImageDataGenerator feeding fit.
step pipeline 85 python3 benchmarks/input_pipeline.py --data-dir "$DATA" --end-to-end-only \
  "${PIPE[@]}" --precision mixed_bfloat16 --jit-compile
# The reference study's combined configuration, with standard augmentation, in 20 epochs.
step combined-20 100 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${SHORT[@]}" \
  --set monitor=val_accuracy
# Last, as the call's own limit may cut it: the wide network in 20 epochs with SGD, Nesterov
# momentum 0.9, rate 0.1 reached by a 2-epoch linear warm-up, then cosine (not yet run on a GPU;
# on a CPU, SGD at 0.05 without warm-up diverged).
step wide-20-sgd 100 python3 benchmarks/gpu_run.py --data-dir "$DATA" "${SHORT[@]}" "${WIDE[@]}" \
  --set optimizer=sgd_nesterov --set learning_rate=0.1 --set warmup_epochs=$WARMUP \
  --set weight_decay_magnitude=0.0005
