#!/usr/bin/env bash
# One device call on the GPU machine (JAX with CUDA, no TensorFlow/MLflow/Optuna, no registry):
# install the wheelhouse into a virtual environment layered over the image's packages (no
# network), then `hpsearch reproduce` on full CIFAR-10 with workers packed on the one GPU, then
# a search and `hpsearch combine`; reports/, trials.csv and the MLflow store land in $OUT.
# Every command runs under its own time limit, so the call stays under 9.5 minutes.
#
#     bash benchmarks/wheelhouse.sh .whl                  # here: wheels (budget checked)
#     cp ../shared/data/cifar10-jpeg.tar.gz data/         # the archive travels in data/
#     run: bash benchmarks/gpu_reproduce.sh   (carry .whl and data)
#
# TINY=1 checks the script on a CPU (a few images, a fraction of an epoch, one study);
# WHEELS=none uses this interpreter's packages instead of a venv (e.g. on this CPU).
set -u
OUT=${OUT:-/tmp/gpu-reproduce-out}
WHEELS=${WHEELS:-.whl}
DATA=${DATA:-data/cifar10-jpeg.tar.gz}
[ -f "$DATA" ] || DATA=../shared/data/cifar10-jpeg.tar.gz
WORK=${WORK:-/tmp/gpu-reproduce}
mkdir -p "$OUT" "$WORK"
started=$SECONDS
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 HPSEARCH_CIFAR10=$PWD/$DATA
[ "${DATA:0:1}" = / ] && HPSEARCH_CIFAR10=$DATA

if [ "$WHEELS" != none ]; then
  # A venv whose base is the image's python3 environment (jax[cuda], numpy, scipy, ...):
  # a .pth file puts that environment's site-packages after the venv's own.
  base=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  python3 -m venv --without-pip "$WORK/venv" || exit 1
  site=$("$WORK/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  echo "$base" > "$site/image-packages.pth"
  timeout 120 python3 -m pip --python "$WORK/venv/bin/python" install -q --no-index --no-deps \
    --no-compile "$WHEELS"/*.whl || exit 1
  export PATH=$WORK/venv/bin:$PATH
fi
PY=$(command -v python3)
HPSEARCH=(python3 -m hpsearch.cli)
nvidia-smi --query-gpu=name,memory.total --format=csv 2>/dev/null | tee "$OUT/gpu.txt"
python3 -c "import sys, jax, keras, mlflow, optuna; print(sys.version.split()[0], jax.devices(),
keras.__version__, mlflow.__version__, optuna.__version__)" 2>&1 | tee -a "$OUT/gpu.txt"
echo "setup: $((SECONDS - started)) s ($PY)" | tee "$OUT/steps.txt"

if [ "${TINY:-0}" = 1 ]; then
  REPRODUCE=(--only baselines --limit 300 --epochs-scale 0.05 --repeats 1 --workers auto)
  SEARCH=(--limit 300 --n-trials 2 --set epochs=1) COMBINE=(--limit 300 --epochs 1)
  LIMITS=(300 240 240)
else
  # Full CIFAR-10, the studies the budget allows, workers packed on the GPU.
  REPRODUCE=(--only baselines --only batch_norm --only combined --workers auto)
  SEARCH=(--n-trials 16 --set epochs=12) COMBINE=() LIMITS=(330 150 70)
fi

step() {  # step NAME SECONDS COMMAND...: run it under its time limit, log to $OUT
  local name=$1 limit=$2 begun=$SECONDS
  shift 2
  (cd "$WORK" && timeout -k 10 "$limit" "$@") > "$OUT/$name.log" 2>&1
  echo "$name: exit $? after $((SECONDS - begun)) s" | tee -a "$OUT/steps.txt"
}

cd "$WORK" || exit 1
rm -rf mlflow.db optuna.db reports hpsearch-spool mlruns
cd - >/dev/null || exit 1
step reproduce "${LIMITS[0]}" "${HPSEARCH[@]}" reproduce "${REPRODUCE[@]}" -q
# The joint study (the whole space, TPE with pruning) on CIFAR-10 ($HPSEARCH_CIFAR10), packed;
# then the final model from its best trial.
step search "${LIMITS[1]}" "${HPSEARCH[@]}" search "$PWD/studies/joint.yaml" --workers auto -q \
  "${SEARCH[@]}"
step combine "${LIMITS[2]}" "${HPSEARCH[@]}" combine "$PWD/studies/joint.yaml" \
  --export final.keras "${COMBINE[@]}"

# What comes back (8 files at most, 16 MiB each): reports, the MLflow store (its database and
# artifacts, trial models left out for size), the Optuna storage, the joint study's trials.csv
# (the newest one logged), the final model, logs.
(cd "$WORK" && tar czf "$OUT/reports.tgz" reports 2>/dev/null)
(cd "$WORK" && tar czf "$OUT/mlflow-store.tgz" --exclude='*.keras' mlflow.db mlruns 2>/dev/null)
cp "$WORK/optuna.db" "$WORK/final.keras" "$OUT/" 2>/dev/null
newest=$(ls -t $(find "$WORK/mlruns" -name trials.csv 2>/dev/null) 2>/dev/null | head -n 1)
[ -n "$newest" ] && cp "$newest" "$OUT/trials.csv"
(cd "$OUT" && tar czf logs.tgz ./*.log && rm -f ./*.log)
echo "total: $((SECONDS - started)) s" | tee -a "$OUT/steps.txt"
