"""The pretraining schedule: a short linear warm-up, then a constant learning rate (as in DDPM and
guided-diffusion), and EMA checkpoints kept at chosen iteration counts.

With a constant rate, the checkpoint after N iterations is what a run planned for N iterations
would have produced, and ``--c`` with a larger ``nnUNet_num_epochs`` continues the same schedule:
one long run yields the checkpoints of a compute-scaling study. (nnU-Net's poly decay reaches zero
at the planned epoch count, so neither holds for it; it remains a trainer variant.)
"""
from __future__ import annotations

import math
import os

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.training_budget import positive_int_from_env

WARMUP_ITERATIONS = 500
WARMUP_ENV = "nnUNet_pretrain_warmup"
KEEP_ENV = "nnUNet_pretrain_keep"


def warmup_epochs(num_iterations_per_epoch: int) -> int:
    """Epochs that cover the warm-up's iterations (``nnUNet_pretrain_warmup``, default
    ``WARMUP_ITERATIONS``), rounded up: nnU-Net sets the rate once per epoch."""
    return max(1, math.ceil(positive_int_from_env(WARMUP_ENV, WARMUP_ITERATIONS) / num_iterations_per_epoch))


class WarmupConstantLRScheduler(_LRScheduler):
    """Linear warm-up to ``initial_lr`` over ``warmup_epochs``, constant after; stepped per epoch
    like nnU-Net's ``PolyLRScheduler`` (``step(current_epoch)``)."""

    def __init__(self, optimizer: Optimizer, initial_lr: float, warmup_epochs: int, current_step: int | None = None):
        self.initial_lr = initial_lr
        self.warmup_epochs = warmup_epochs
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.initial_lr * min(1.0, (current_step + 1) / self.warmup_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr


def kept_iterations(num_iterations_per_epoch: int) -> list[int]:
    """``nnUNet_pretrain_keep=4000,8000,...``: iteration counts whose EMA checkpoint is kept
    (``checkpoint_it<N>.pth``); each must end an epoch."""
    raw = os.environ.get(KEEP_ENV, "").strip()
    if not raw:
        return []
    try:
        values = sorted({int(v) for v in raw.split(",") if v.strip()})
    except ValueError:
        values = []
    if not values or values[0] < 1:
        raise UserFacingError(f"{KEEP_ENV} must be comma-separated positive iteration counts, got {raw!r}")
    off = [v for v in values if v % num_iterations_per_epoch]
    if off:
        raise UserFacingError(f"{KEEP_ENV}: {off[0]} iterations do not end an epoch of {num_iterations_per_epoch} "
                              f"iterations; use multiples of {num_iterations_per_epoch}")
    return values


def kept_checkpoint_name(iterations: int) -> str:
    return f"checkpoint_it{iterations}.pth"
