#!/usr/bin/env bash
# Runs a GPU script (default benchmarks/gpu_preset_short.sh) on a lent GPU machine, which has PyTorch but
# neither nnU-Net nor this package and cannot reach a registry: unpacks what benchmarks/gpu_loan_pack.sh
# put in .whl/ (nnU-Net's other dependencies as a Python 3.12 site folder, this package's wheel, the CT
# subset and unlabeled_ct if packed), then starts the script with whatever is left of SECONDS_LEFT as its
# LIMIT. Re-run on the same warm machine, it skips the unpacking and the script resumes.
#   run(command="SECONDS_LEFT=570 NUM_LABELED= bash benchmarks/gpu_loan_run.sh", carry=[".whl"])
#   run(command="SECONDS_LEFT=545 FOLD=5 bash benchmarks/gpu_loan_run.sh benchmarks/gpu_pretraining_continue.sh",
#       carry=[".whl"])   (.whl/work.tar.xz: the work folder's preprocessed data, see that script)
set -u
start=$(date +%s)
if [ ! -d /tmp/gpu_loan/site312 ]; then
  mkdir -p /tmp/gpu_loan
  tar -xJf .whl/site312.tar.xz -C /tmp/gpu_loan || exit 1
  if [ -f .whl/data.tar.xz ]; then
    tar -xJf .whl/data.tar.xz -C /tmp/gpu_loan || exit 1
    find /tmp/gpu_loan/gpudata -name '*.nii' -print0 | xargs -0 -P 16 -n 1 gzip -1
  fi
  # the site folder was installed here by another Python: point its scripts at this machine's
  sed -i "1s|^#!.*python.*|#!$(command -v python3)|" /tmp/gpu_loan/site312/bin/*
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/gpu_loan/ours \
    .whl/nnunet_diffusion_pretrain-*.whl || exit 1
fi
export PYTHONPATH=/tmp/gpu_loan/ours:/tmp/gpu_loan/site312 PATH=/tmp/gpu_loan/ours/bin:/tmp/gpu_loan/site312/bin:$PATH
echo "unpacked in $(( $(date +%s) - start )) s"
DATA=/tmp/gpu_loan/gpudata LIMIT=$(( ${SECONDS_LEFT:-570} - $(date +%s) + start )) \
  bash "${1:-benchmarks/gpu_preset_short.sh}"
