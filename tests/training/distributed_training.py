"""Run one of the plugin's trainers under DDP on CPU: 2 processes, gloo backend.

What ``nnUNetv2_train ... -num_gpus 2`` does (nnU-Net's ``run_ddp``: trainer from the command's
arguments, ``--c`` or ``-pretrained_weights`` handling, training, end-of-training validation),
with two CPU-only changes: the process group uses gloo instead of nccl, and DDP wraps the CPU
module without ``device_ids``. Everything the plugin does under DDP (EMA, rank-0 checkpoints,
samples and logs, gathered held-out losses, freezing and re-wrapping) runs unchanged. Each rank
writes a JSON of what the test compares across ranks.

    python distributed_training.py TRAINER DATASET CONFIGURATION FOLD OUT_DIR [--c] [--pretrained_weights F]
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


def _sha256(tensors) -> str:
    """Every value, bit for bit."""
    return hashlib.sha256(torch.cat([t.detach().flatten() for t in tensors]).numpy().tobytes()).hexdigest()


def _worker(rank: int, world_size: int, init_file: str, args: argparse.Namespace) -> None:
    import nnunetv2.training.nnUNetTrainer.nnUNetTrainer as stock_trainer
    from nnunetv2.run.run_training import get_trainer_from_args, maybe_load_checkpoint

    from nnunet_diffusion_pretrain.training.pretrained_weights_hook import unwrap

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    stock_trainer.DDP = _cpu_ddp
    fold = args.fold if args.fold == "all" else int(args.fold)
    trainer = get_trainer_from_args(args.dataset, args.configuration, fold, args.trainer, "nnUNetPlans", args.c)
    trainer.device, trainer.grad_scaler = torch.device("cpu"), None  # stock DDP assumes cuda:rank
    maybe_load_checkpoint(trainer, args.c, False, args.pretrained_weights)
    trainer.run_training()
    if hasattr(trainer, "ema"):  # pretraining: its end-of-training samples, on rank 0 only
        trainer.perform_actual_validation(False)
    dist.barrier()  # reached by both ranks only if nothing on rank 0 blocked rank 1

    summary = {"rank": rank, "batch_size": trainer.batch_size, "current_epoch": trainer.current_epoch,
               "weights_sha256": _sha256(unwrap(trainer.network).parameters()),
               "val_losses": [float(v) for v in trainer.logger.local_logger.my_fantastic_logging["val_losses"]]}
    if hasattr(trainer, "ema"):
        summary.update(ema_sha256=_sha256(trainer.ema.shadow_params),
                       ema_optimization_step=int(trainer.ema.optimization_step))
    Path(args.out_dir, f"rank{rank}.json").write_text(json.dumps(summary))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("trainer")
    parser.add_argument("dataset")
    parser.add_argument("configuration")
    parser.add_argument("fold")
    parser.add_argument("out_dir")
    parser.add_argument("--c", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--pretrained_weights", default=None)
    args = parser.parse_args()
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    init_file = Path(args.out_dir) / "ddp_init"
    init_file.unlink(missing_ok=True)
    mp.spawn(_worker, args=(2, str(init_file), args), nprocs=2, join=True)


if __name__ == "__main__":
    main()
