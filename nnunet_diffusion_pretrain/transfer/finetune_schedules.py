"""Learning-rate schedules of the fine-tuning recipes, as functions of the epoch.

``nnssl``: nnssl's ``PretrainedTrainer`` (now in stock nnU-Net): the whole network from the start,
a linear warm-up over the first 5% of epochs to lr 1e-3, then poly decay. ``sawtooth``: its
``PretrainedTrainer_sawtooth``: the decoder alone warms up (2.5% of epochs) and decays to zero
(the next 2.5%), then the whole network warms up (5%) and decays. (nnssl's code, as written, warms
the whole network up only to half the peak before the final decay jumps to it; here each warm-up
reaches the peak.) Our default (``nnUNetTrainerDiffusionFinetune``) differs: decoder-only for 10%
of epochs at nnU-Net's poly rate 1e-2, then everything, with the encoder at 0.1x.
"""
from __future__ import annotations

from typing import Callable

from torch.optim import Optimizer
from torch.optim.lr_scheduler import _LRScheduler

NNSSL_LR = 1e-3
POLY_EXPONENT = 0.9


def _phase(num_epochs: int, fraction: float) -> int:
    return max(1, round(fraction * num_epochs))


def _poly(step: int, steps: int) -> float:
    return max(0.0, 1 - step / max(1, steps)) ** POLY_EXPONENT


def nnssl_factor(epoch: int, num_epochs: int) -> float:
    """Linear warm-up over the first 5% of epochs, then poly decay to zero at the end."""
    warmup = _phase(num_epochs, 0.05)
    if epoch < warmup:
        return (epoch + 1) / warmup
    return _poly(epoch - warmup, num_epochs - warmup)


def sawtooth_decoder_epochs(num_epochs: int) -> int:
    """Epochs in which only the decoder (and heads) train."""
    return 2 * _phase(num_epochs, 0.025)


def sawtooth_factor(epoch: int, num_epochs: int) -> float:
    """Decoder: warm-up, then decay to zero; whole network: warm-up over 5%, then poly decay."""
    half = _phase(num_epochs, 0.025)
    if epoch < half:
        return (epoch + 1) / half
    if epoch < 2 * half:
        return _poly(epoch - half, half)
    start, warmup = 2 * half, _phase(num_epochs, 0.05)
    if epoch < start + warmup:
        return (epoch - start + 1) / warmup
    return _poly(epoch - start - warmup, num_epochs - start - warmup)


class EpochFactorLRScheduler(_LRScheduler):
    """Sets every group's rate to ``peak * factor(epoch, num_epochs) * group['lr_scale']`` (scale 1
    where unset); stepped per epoch like nnU-Net's ``PolyLRScheduler``."""

    def __init__(self, optimizer: Optimizer, peak: float, num_epochs: int, factor: Callable[[int, int], float]):
        self.peak, self.num_epochs, self.factor, self.ctr = peak, num_epochs, factor, 0
        super().__init__(optimizer, -1)

    def step(self, current_step: int | None = None) -> None:
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = self.peak * self.factor(current_step, self.num_epochs)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
