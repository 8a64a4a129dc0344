#!/usr/bin/env bash
# resnet9 with the DAWNBench-style recipe (Page, "How to train your ResNet"): SGD with Nesterov
# momentum at a high rate after a linear warm-up, batch 512, L2 2.5e-4 (Keras's L2 adds
# 2 * 2.5e-4 * w to the gradient, Page's 5e-4), logits times 0.125, label smoothing 0.2; three
# variants side by side on the one GPU, each with a training-time budget. Same set-up as
# device_check.sh (wheels in .whl/, the archive in data/, results in $OUT); SMALL=1 checks the
# script on a CPU:
#     bash benchmarks/device_recipe.sh
set -u
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT" /tmp/site
WHEELS=${WHEELS:-.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
export HPSEARCH_RESULTS=$OUT/RESULTS-gpu.md XLA_PYTHON_CLIENT_MEM_FRACTION=0.3
DATA=${DATA:-data/cifar10-jpeg.tar.gz}
if [ "${SMALL:-0}" = 1 ]; then
  SIZE=(--limit 300 --epochs 3) WARMUP=1 BUDGET=0 LIMIT=600
else
  SIZE=(--epochs ${EPOCHS:-28}) WARMUP=5 BUDGET=${BUDGET:-120} LIMIT=${LIMIT:-175}
fi
python3 -c "from hpsearch.datasets import load_dataset; load_dataset('folder', '$DATA')" || exit 1
RECIPE="--set architecture=resnet9 --set dropout=none --set monitor=val_accuracy
  --set batch_size=512 --set optimizer=sgd_nesterov --set warmup_epochs=$WARMUP
  --set weight_decay_magnitude=0.00025 --set label_smoothing=0.2 --set logit_scale=0.125"
declare -A VARIANT=(
  [sgd04-cutout]="--set learning_rate=0.4 --augmentation standard+cutout"
  [sgd02-cutout]="--set learning_rate=0.2 --augmentation standard+cutout"
  [sgd04]="--set learning_rate=0.4 --augmentation standard"
)
for name in "${!VARIANT[@]}"; do
  (
    started=$SECONDS
    # shellcheck disable=SC2086  # the recipe's words are separate arguments
    timeout "$LIMIT" python3 benchmarks/gpu_run.py --data-dir "$DATA" "${SIZE[@]}" \
      --budget "$BUDGET" $RECIPE ${VARIANT[$name]} > "$OUT/$name.log" 2>&1
    echo "$name: exit $? after $((SECONDS - started)) s" >> "$OUT/steps.txt"
  ) &
done
wait
cat "$OUT/steps.txt"
grep -H "epochs run\|seconds per epoch\|85% val\|90% val\|best validation accuracy |\|test accuracy" \
  "$OUT"/*.log
