"""EMA of the denoiser's weights (diffusers' ``EMAModel``) and a way to use them temporarily.

The EMA weights, not the raw optimiser weights, are what validation, sampling and every later
stage use: they give visibly better samples and a smoother starting point for fine-tuning.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from diffusers.training_utils import EMAModel
from torch import nn


def make_ema(module: nn.Module, max_decay: float = 0.9999) -> EMAModel:
    """EMA with warm-up (decay 1 - (1 + step)^-3/4, capped): it follows the weights closely early,
    so even short runs export useful EMA weights, and averages over ~10k steps late."""
    return EMAModel(module.parameters(), decay=max_decay, use_ema_warmup=True, power=3 / 4, foreach=True)


@contextmanager
def ema_weights_applied(module: nn.Module, ema: EMAModel) -> Iterator[nn.Module]:
    """Swap the EMA weights into ``module`` for the duration of the block."""
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        yield module
    finally:
        ema.restore(module.parameters())


def ema_state_dict(module: nn.Module, ema: EMAModel) -> dict[str, torch.Tensor]:
    """The module's full state dict (same keys as ``module.state_dict()``) with EMA weights."""
    with ema_weights_applied(module, ema):
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
