#!/usr/bin/env bash
# Fills .whl/ (ignored by git) with what benchmarks/gpu_loan_run.sh needs on a lent GPU machine, which has
# Python 3.12 with PyTorch but no registry access, within the 64 MiB a device call may carry: nnU-Net's
# other dependencies at this environment's versions, installed into a Python 3.12 site folder, shared
# libraries stripped, xz-compressed (about 35 MB); the CT subset and unlabeled_ct, uncompressed then
# xz-compressed (about 16 MB; WITH_DATA=0 leaves it out, for a call that carries a work folder prepared
# here instead); this package's wheel. LEAVE_OUT names packages not to pack (monai: only the evaluation
# imports it; leaving it out makes room for a carried work folder). Run here, after `make .venv/.installed`:
#   bash benchmarks/gpu_loan_pack.sh
#   WITH_DATA=0 LEAVE_OUT=monai bash benchmarks/gpu_loan_pack.sh
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${DATA:-$REPO/../shared/data}"
PY="$REPO/.venv/bin/python"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform any)
# packages the GPU image lacks (its list: the device tool's KINDS.md); SOURCE_ONLY ones publish no wheel
# and are built here (pure Python)
BINARY="nnunetv2 batchgenerators batchgeneratorsv2 blosc2 ndindex numexpr connected-components-3d SimpleITK
        nibabel graphviz yacs future unittest2 traceback2 linecache2 diffusers importlib_metadata monai"
SOURCE_ONLY="acvl_utils dynamic_network_architectures"
pin() { "$PY" -m pip show "$1" | sed -n 's/^Version: //p' | sed "s/^/$1==/"; }
mkdir -p "$REPO/.whl" "$TMP/wheels"
for p in ${LEAVE_OUT:-}; do BINARY="${BINARY/$p/}"; done
python3 -m pip download -q --no-deps "${TARGET[@]}" -d "$TMP/wheels" $(for p in $BINARY; do pin "$p"; done)
python3 -m pip wheel -q --no-deps -w "$TMP/wheels" $(for p in $SOURCE_ONLY; do pin "$p"; done)
python3 -m pip install -q --no-index --no-deps --no-compile "${TARGET[@]}" --target "$TMP/site312" "$TMP"/wheels/*.whl
find "$TMP/site312" -name '*.so*' -type f -exec strip --strip-unneeded {} + 2>/dev/null || true
find "$TMP/site312" -type d \( -name tests -o -name test -o -name __pycache__ \) -prune -exec rm -rf {} +
tar -cf - -C "$TMP" site312 | xz -9e -T2 > "$REPO/.whl/site312.tar.xz"
rm -f "$REPO/.whl/data.tar.xz"
if [ "${WITH_DATA:-1}" = 1 ]; then
  mkdir -p "$TMP/gpudata"
  cp -r "$DATA/abdomen_ct_btcv6" "$DATA/unlabeled_ct" "$TMP/gpudata/"
  gunzip -r "$TMP/gpudata"  # xz compresses the raw voxels to about a third less than gzip did
  tar -cf - -C "$TMP" gpudata | xz -9e -T2 > "$REPO/.whl/data.tar.xz"
fi
rm -f "$REPO"/.whl/nnunet_diffusion_pretrain-*.whl
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$REPO/.whl" "$REPO"
du -ch "$REPO"/.whl/*
