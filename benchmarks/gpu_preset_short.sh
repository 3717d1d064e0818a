#!/usr/bin/env bash
# The benchmark's `gpu` preset (nnU-Net's own 2d configuration, batch and network) on the CT subset,
# on one CUDA GPU, with its schedules shortened to fit a 15-minute GPU loan: one repeat of the
# 1-volume and 4-slice budgets, PRETRAIN_EPOCHS / FINETUNE_EPOCHS x ITERATIONS iterations, no
# synthetic row (NUM_LABELED= with nothing after it drops the 1-volume budget: 4 slices and the
# upper bound only). SEED picks the held-out set and the labelled cases (seed 2 holds out the same
# cases as the default 0 but labels another volume). torch.compile is off (it costs about a minute
# per run, longer than a shortened run).
# The benchmark is stopped after LIMIT seconds (it resumes where it stopped if re-run); its report
# is rewritten after every finished run, so $OUT holds a report (partial if stopped early, saying
# which runs are missing), the logs and the per-run metrics either way.
#   DATA=../shared/data OUT=/some/folder bash benchmarks/gpu_preset_short.sh
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DATA="${DATA:-$REPO/../shared/data}"
OUT="${OUT:-$REPO/gpu_preset_output}"
WORK="${WORK:-$REPO/benchmarks/work/btcv6_gpu_short}"
PRETRAIN_EPOCHS="${PRETRAIN_EPOCHS:-10}" FINETUNE_EPOCHS="${FINETUNE_EPOCHS:-4}" ITERATIONS="${ITERATIONS:-100}"
LIMIT="${LIMIT:-460}" NUM_LABELED="${NUM_LABELED-1}" SEED="${SEED:-0}"
export nnUNet_compile=f nnUNet_n_proc_DA="${nnUNet_n_proc_DA:-12}" nnUNet_def_n_proc="${nnUNet_def_n_proc:-4}" PYTHONUNBUFFERED=1
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/benchmark.log"
timeout "$LIMIT" nnUNetv2_diffusion_benchmark --preset gpu --convert btcv6_subset -i "$DATA/abdomen_ct_btcv6" \
  --unlabeled "$DATA/unlabeled_ct" --window -125 275 --num-held-out 3 --num-labeled $NUM_LABELED --num-labeled-slices 4 --repeats 1 \
  --seed "$SEED" --synthetic-images 0 --pretrain-epochs "$PRETRAIN_EPOCHS" --finetune-epochs "$FINETUNE_EPOCHS" \
  --iterations-per-epoch "$ITERATIONS" -device cuda -np 8 -w "$WORK" -o "$OUT/report" 2>&1 \
  | grep --line-buffered -v -E "it/s\]|s/it\]" | tee -a "$OUT/benchmark.log"
echo "benchmark exit status: ${PIPESTATUS[0]} (124: stopped at the $LIMIT s limit)" | tee -a "$OUT/benchmark.log"
tar -czf "$OUT/work_logs.tar.gz" -C "$WORK" benchmark_state.json logs metrics 2>/dev/null
