# Sourced by the device scripts (device_check.sh, device_recipe.sh), from the repository root:
# $OUT for results, the wheels a JAX-only GPU machine lacks installed from $WHEELS (.whl/;
# WHEELS=none where everything is installed), Keras on JAX, results in $OUT/RESULTS-gpu.md,
# the CIFAR-10 archive in $DATA (data/).
OUT=${OUT:-/tmp/device-out}
mkdir -p "$OUT" /tmp/site
WHEELS=${WHEELS:-.whl}
if ls "$WHEELS"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site "$WHEELS"/*.whl || exit 1
fi
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
export HPSEARCH_RESULTS=$OUT/RESULTS-gpu.md
DATA=${DATA:-data/cifar10-jpeg.tar.gz}
