#!/usr/bin/env bash
# A benchmark's diffusion pretraining, run or continued on a lent GPU for a work folder prepared on this
# machine, so that the plans, the preprocessed data and the pool are exactly this machine's and the
# checkpoint continues here with --c (the pretraining-compute study, benchmarks/pretraining_compute.py).
# Here: start the benchmark, stop it once its pretraining phase has started, then pack that fold's
# preprocessed folder and call the GPU (the pack's site folder without monai, to fit the 64 MiB a call
# carries):
#   WITH_DATA=0 LEAVE_OUT=monai bash benchmarks/gpu_loan_pack.sh
#   tar -cf - -C benchmarks/work/btcv6_compute/fold_0 nnUNet_preprocessed | xz -9 -T2 > .whl/work.tar.xz
#   run(command="SECONDS_LEFT=545 FOLD=5 bash benchmarks/gpu_loan_run.sh benchmarks/gpu_pretraining_continue.sh",
#       carry=[".whl"])
# There: nnUNetv2_train with the benchmark's pretraining budget (EPOCHS x ITERATIONS, VAL_ITERATIONS
# validation iterations per epoch, a checkpoint every 5 epochs, the EMA checkpoints of KEEP kept) until
# LIMIT seconds; then to $OUT: the kept checkpoints reduced to what the transfer trainers and the
# sampling commands read (EMA weights and the record, 15 MiB each for the cpu preset; not usable for
# --c), nnU-Net's training log and progress plot. The last full checkpoint (about 3x that, over what one
# call brings back beside them) comes back in 15 MiB parts from a second call on the still-warm machine
# (it stays warm 30 s), which only copies:
#   run(command="ONLY_LATEST=1 FOLD=5 bash benchmarks/gpu_loan_run.sh benchmarks/gpu_pretraining_continue.sh",
#       carry=[".whl"])
# Back here: `cat checkpoint_latest.pth.part* > FOLDER/checkpoint_latest.pth` in the benchmark's
# pretraining folder, copy the kept checkpoints beside it, and run the benchmark again: it continues
# with --c on this machine.
set -uo pipefail
OUT="${OUT:-$PWD/gpu_pretraining_output}"
LIMIT="${LIMIT:-460}" DATASET="${DATASET:-601}" CONFIGURATION="${CONFIGURATION:-2d_cpu}" FOLD="${FOLD:?FOLD: the benchmark pretraining fold, its all fold}"
WORK=/tmp/gpu_pretraining_work
mkdir -p "$OUT" "$WORK/nnUNet_raw" "$WORK/nnUNet_results"
[ -d "$WORK/nnUNet_preprocessed" ] || tar -xJf .whl/work.tar.xz -C "$WORK" || exit 1
export nnUNet_raw="$WORK/nnUNet_raw" nnUNet_preprocessed="$WORK/nnUNet_preprocessed" nnUNet_results="$WORK/nnUNet_results"
fold="$nnUNet_results/$(ls "$nnUNet_preprocessed" | grep "^Dataset$DATASET")/nnUNetTrainerDiffusionPretrain__nnUNetPlansAxial__$CONFIGURATION/fold_$FOLD"
if [ "${ONLY_LATEST:-0}" = 1 ]; then
  split -b 15M -d "$fold/checkpoint_latest.pth" "$OUT/checkpoint_latest.pth.part" && ls -la "$OUT"
  exit
fi
# the cpu preset's pretraining budget, as the benchmark sets it (evaluation/work_folder.py::training_budget_env)
export nnUNet_num_epochs="${EPOCHS:-640}" nnUNet_num_iterations_per_epoch="${ITERATIONS:-100}" \
  nnUNet_num_val_iterations_per_epoch="${VAL_ITERATIONS:-2}" nnUNet_save_every=5 \
  nnUNet_pretrain_keep="${KEEP:-8000,16000,32000,64000}" nnUNet_compile=f nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-12}" \
  PYTHONUNBUFFERED=1
eval "$(nnUNetv2_diffusion_env)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/pretraining.log"
resume=(); [ -f "$fold/checkpoint_latest.pth" ] && resume=(--c)
start=$(date +%s)
timeout --kill-after=15 "$LIMIT" nnUNetv2_train "$DATASET" "$CONFIGURATION" "$FOLD" -tr nnUNetTrainerDiffusionPretrain \
  -p nnUNetPlansAxial -device "${DEVICE:-cuda}" "${resume[@]}" 2>&1 | grep --line-buffered -v -E "DDIM sampling|it/s\]|s/it\]" \
  | tee -a "$OUT/pretraining.log" | grep --line-buffered -E "Epoch time|Kept|Error|Traceback"
echo "pretraining exit status: ${PIPESTATUS[0]} (124: stopped at the $LIMIT s limit); $(( $(date +%s) - start )) s" \
  | tee -a "$OUT/pretraining.log"
python3 - "$fold" "$OUT" <<'PY'
import sys
from pathlib import Path
import torch
from nnunet_diffusion_pretrain.checkpoint_io import RAW_WEIGHTS, load_checkpoint_safely
fold, out = Path(sys.argv[1]), Path(sys.argv[2])
for kept in sorted(fold.glob("checkpoint_it*.pth")):
    checkpoint = load_checkpoint_safely(kept)
    for key in (RAW_WEIGHTS, "ema_state", "optimizer_state", "grad_scaler_state"):
        checkpoint.pop(key)
    torch.save(checkpoint, out / kept.name)
    print(f"{kept.name}: epoch {checkpoint['current_epoch']}, {(out / kept.name).stat().st_size / 2**20:.1f} MiB reduced")
PY
python3 -c "import sys; from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely as load
print('checkpoint_latest.pth: epoch', load(sys.argv[1])['current_epoch'])" "$fold/checkpoint_latest.pth"
cp "$fold"/training_log_*.txt "$OUT/training_log.txt" 2>/dev/null
cp "$fold/progress.png" "$OUT/" 2>/dev/null
ls -la "$OUT"
