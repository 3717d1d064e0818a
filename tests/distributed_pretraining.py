"""Run ``nnUNetTrainerDiffusionPretrain`` under DDP on CPU: 2 processes, gloo backend.

What ``nnUNetv2_train ... -num_gpus 2`` does (nnU-Net's ``run_ddp``: trainer from the command's
arguments, ``--c`` handling, training, end-of-training validation), with two CPU-only changes:
the process group uses gloo instead of nccl, and DDP wraps the CPU module without ``device_ids``.
Everything the plugin does under DDP (EMA, rank-0 checkpoints/samples/logs, gathered held-out
losses) runs unchanged. Each rank writes a JSON of what the test compares across ranks.

    python distributed_pretraining.py DATASET CONFIGURATION FOLD OUT_DIR [--c]
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel


def _cpu_ddp(module, device_ids=None):
    return DistributedDataParallel(module)


def _worker(rank: int, world_size: int, init_file: str, dataset: str, configuration: str, fold: str,
            continue_training: bool, out_dir: str) -> None:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as stock_trainer
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    stock_trainer.DDP = _cpu_ddp
    trainer = get_trainer_from_args(dataset, configuration, fold if fold == "all" else int(fold),
                                    "nnUNetTrainerDiffusionPretrain", "nnUNetPlans", continue_training)
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # stock DDP assumes cuda:rank
    maybe_load_checkpoint(trainer, continue_training, False)
    trainer.run_training()
    trainer.perform_actual_validation(False)
    dist.barrier()  # reached by both ranks only if sampling on rank 0 did not block rank 1

    ema = torch.cat([p.flatten() for p in trainer.ema.shadow_params])
    weights = torch.cat([p.detach().flatten() for p in trainer.denoiser().parameters()])
    summary = {"rank": rank, "batch_size": trainer.batch_size, "current_epoch": trainer.current_epoch,
               "ema_optimization_step": int(trainer.ema.optimization_step),
               "ema_sha256": hashlib.sha256(ema.numpy().tobytes()).hexdigest(),  # every value, bit for bit
               "weights_sha256": hashlib.sha256(weights.numpy().tobytes()).hexdigest(),
               "val_losses": trainer.logger.local_logger.my_fantastic_logging["val_losses"]}
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("fold")
    parser.add_argument("out_dir")
    parser.add_argument("--c", action="store_true", help="continue from the last checkpoint")
    args = parser.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    init_file = Path(args.out_dir) / "ddp_init"
    init_file.unlink(missing_ok=True)
    mp.spawn(_worker, args=(2, str(init_file), args.dataset, args.configuration, args.fold, args.c, args.out_dir),
             nprocs=2, join=True)


if __name__ == "__main__":
    main()
