#!/usr/bin/env bash
# Diffusion pretraining on a GPU with nnU-Net's defaults (AMP, torch.compile), end to end through
# the stock commands; then the GPU checkpoint is loaded and training continued (--c) in a process
# that sees no GPU (CUDA_VISIBLE_DEVICES=""), as on a CPU-only machine; then the iteration-cost
# benchmark on that GPU. Logs, sample grid and reports go to $OUT (default ./gpu_check_output).
#   OUT=/some/folder bash benchmarks/gpu_pretraining_check.sh
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
OUT="${OUT:-$REPO/gpu_check_output}"
WORK="$(mktemp -d)"
export nnUNet_raw="$WORK/raw" nnUNet_preprocessed="$WORK/preprocessed" nnUNet_results="$WORK/results"
export nnUNet_def_n_proc=8 PYTHONUNBUFFERED=1
eval "$(nnUNetv2_diffusion_env)"
mkdir -p "$OUT" "$nnUNet_raw" "$nnUNet_preprocessed" "$nnUNet_results"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/train.log"

# the same phantom (seed 0) and plans as the CPU demo, so the checkpoint fits there
nnUNetv2_diffusion_make_phantom -d 990 --name DiffusionPhantom -u "$WORK/unlabeled_ct"
nnUNetv2_plan_and_preprocess -d 990 -c 2d -np 8 > "$WORK/plan.log" 2>&1
nnUNetv2_diffusion_add_unlabeled -d 990 -c 2d -i "$WORK/unlabeled_ct" -np 4
start=$(date +%s)
nnUNet_num_epochs=4 nnUNet_num_iterations_per_epoch=50 nnUNet_num_val_iterations_per_epoch=5 \
  nnUNetv2_train 990 2d all -tr nnUNetTrainerDiffusionPretrain -device cuda 2>&1 | grep -v "DDIM sampling" \
  | tee -a "$OUT/train.log" | grep -E "Epoch|loss|compile|written|Error"
echo "pretraining wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/train.log"
fold="$nnUNet_results/Dataset990_DiffusionPhantom/nnUNetTrainerDiffusionPretrain__nnUNetPlans__2d/fold_all"
cp "$fold/samples/samples.png" "$OUT/gpu_samples.png"

# the GPU-trained checkpoint on a machine without a GPU: safe load, then one more epoch with --c
CUDA_VISIBLE_DEVICES="" python3 - "$fold/checkpoint_final.pth" <<'PY' | tee "$OUT/cpu_continue.log"
import sys, torch
from nnunet_diffusion_pretrain.checkpoint_io import load_checkpoint_safely
assert not torch.cuda.is_available()
ckpt = load_checkpoint_safely(sys.argv[1])  # weights_only=True, map_location=cpu
devices = {t.device.type for k in ("network_weights", "online_network_weights") for t in ckpt[k].values()}
print("trained on:", ckpt["init_args"]["device"], "| tensor devices in file:", devices,
      "| epoch:", ckpt["current_epoch"], "| record:", {k: ckpt["diffusion_pretraining"][k]
      for k in ("configuration", "network_class_name", "beta_schedule", "prediction_type")})
assert devices == {"cpu"}
PY
CUDA_VISIBLE_DEVICES="" nnUNet_num_epochs=5 nnUNet_num_iterations_per_epoch=20 nnUNet_num_val_iterations_per_epoch=2 \
  nnUNet_diffusion_sampling_steps=5 nnUNetv2_train 990 2d all -tr nnUNetTrainerDiffusionPretrain -device cpu --c 2>&1 \
  | grep -v "DDIM sampling" | tee -a "$OUT/cpu_continue.log" | grep -E "Using device|Epoch|loss|written|Error"

python3 "$REPO/benchmarks/iteration_cost.py" --device cuda --output "$OUT/iteration_cost_cuda"
python3 "$REPO/benchmarks/iteration_cost.py" --device cuda --compile --configurations 2d \
  --output "$OUT/iteration_cost_cuda_compile"
rm -f "$OUT/iteration_cost_cuda_compile/timings.png"  # the device tool returns at most 8 files
rm -rf "$WORK"
