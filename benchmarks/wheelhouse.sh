#!/usr/bin/env bash
# The wheels a machine without a package registry lacks for hpsearch on KERAS_BACKEND=jax
# (search, worker, reproduce, best, combine, report with a local SQLite MLflow store and
# Optuna storage): benchmarks/jax-requirements.txt and everything they need, less what that
# machine already holds, plus hpsearch's own wheel. Run here, where pip reaches a registry:
#
#     bash benchmarks/wheelhouse.sh [DEST]          # default DEST: .whl
#
# Default target: the GPU machine (Python 3.12, manylinux x86_64, the image's packages in
# benchmarks/gpu-packages.txt left out); the wheels plus the CIFAR-10 archive must fit in what a
# device call carries (64 MiB): the script prints each wheel's size and the total, and fails
# over budget.
#
#     TARGET_PYTHON=/path/venv/bin/python bash benchmarks/wheelhouse.sh DEST
#
# builds it for that interpreter instead (its version and platform, leaving out what its
# environment holds; no budget unless BUDGET_MIB is set): tests/test_jax_only.py does this for
# a fresh virtual environment holding only JAX and NumPy.
#
# Settings: PY_VERSION (3.12), BUDGET_MIB (64; 0: none), ARCHIVE (counted in the budget;
# ../shared/data/cifar10-jpeg.tar.gz), HAVE (benchmarks/gpu-packages.txt).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${1:-.whl}
REQUIREMENTS=$ROOT/benchmarks/jax-requirements.txt
export PIP_DISABLE_PIP_VERSION_CHECK=1
# pip's warnings about local index folders that lack a package are noise here
exec 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"
if ls "$DEST"/*.whl >/dev/null 2>&1; then
  echo "wheelhouse: $DEST already holds wheels; remove them first (two versions of one" \
    "package stop the install)" >&2
  exit 1
fi

if [ -n "${TARGET_PYTHON:-}" ]; then
  PIP=(python3 -m pip --python "$TARGET_PYTHON")  # works for a venv made --without-pip
  TARGET=()  # its own version and platform
  # Resolved in the target environment itself: the report lists what it lacks.
  RESOLVE=("${PIP[@]}" install --dry-run)
  HAVE_FILE=/dev/null
  BUDGET_MIB=${BUDGET_MIB:-0}
  where="$("$TARGET_PYTHON" -c 'import sys; print(sys.prefix)')"
else
  PIP=(python3 -m pip)
  PY_VERSION=${PY_VERSION:-3.12}
  TARGET=(--python-version "$PY_VERSION" --implementation cp --abi "cp${PY_VERSION/./}"
          --abi abi3 --abi none)
  for tag in manylinux_2_39 manylinux_2_35 manylinux_2_34 manylinux_2_31 manylinux_2_28 \
      manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1 linux; do
    TARGET+=(--platform "${tag}_x86_64")
  done
  TARGET+=(--platform any)
  # Resolved from scratch for that interpreter; what the image holds is dropped afterwards.
  RESOLVE=("${PIP[@]}" install --dry-run --ignore-installed --target "$WORK/target")
  HAVE_FILE=${HAVE:-$ROOT/benchmarks/gpu-packages.txt}
  BUDGET_MIB=${BUDGET_MIB:-64}
  where="the GPU machine (Python $PY_VERSION, manylinux x86_64)"
fi
echo "wheelhouse for $where in $DEST"

# 1. Resolve (pip reads metadata only where the index serves it) and list what is missing.
# jax is resolved too, so that its needs constrain the rest, and then left out like numpy.
"${RESOLVE[@]}" --quiet --only-binary=:all: "${TARGET[@]}" --report "$WORK/report.json" \
  -r "$REQUIREMENTS" jax >/dev/null
python3 - "$WORK/report.json" "$HAVE_FILE" > "$WORK/wanted.txt" <<'EOF'
import json
import re
import sys

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

have = {"jax", "jaxlib", "numpy"}  # the machine's own
for line in open(sys.argv[2]):
    line = line.split("#", 1)[0].strip()
    if line:
        have.add(norm(line))
for item in json.load(open(sys.argv[1]))["install"]:
    meta = item["metadata"]
    if norm(meta["name"]) not in have:
        print(f"{meta['name']}=={meta['version']}")
EOF
echo "$(wc -l < "$WORK/wanted.txt") packages to carry"

# 2. Download exactly those, no dependencies (the resolution above chose them).
if [ -s "$WORK/wanted.txt" ]; then
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: "${TARGET[@]}" -d "$DEST" \
    -r "$WORK/wanted.txt"
fi

# 3. hpsearch itself, built from a copy of the tree (no build/ folder left here).
mkdir -p "$WORK/src"
cp -r "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/hpsearch" "$WORK/src/"
find "$WORK/src" -name __pycache__ -prune -exec rm -rf {} +
# (with this interpreter's setuptools where it can build wheels, else in pip's isolated build)
python3 -m pip wheel --quiet --no-deps --no-build-isolation -w "$DEST" "$WORK/src" 2>/dev/null \
  || python3 -m pip wheel --quiet --no-deps -w "$DEST" "$WORK/src"

# 4. Sizes and budget.
python3 - "$DEST" "$BUDGET_MIB" "${ARCHIVE:-$ROOT/../shared/data/cifar10-jpeg.tar.gz}" <<'EOF'
import sys
from pathlib import Path

dest, budget, archive = Path(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3])
MIB = 1024 * 1024
wheels = sorted(dest.glob("*.whl"), key=lambda p: -p.stat().st_size)
total = sum(p.stat().st_size for p in wheels)
for path in wheels:
    print(f"{path.stat().st_size / MIB:8.2f} MiB  {path.name}")
print(f"{total / MIB:8.2f} MiB  total, {len(wheels)} wheels")
if budget:
    extra = archive.stat().st_size if archive.exists() else 0
    if extra:
        print(f"{extra / MIB:8.2f} MiB  {archive.name}")
    print(f"{(total + extra) / MIB:8.2f} MiB  with the archive; budget {budget:.0f} MiB")
    if total + extra > budget * MIB:
        sys.exit("wheelhouse: over budget")
EOF
