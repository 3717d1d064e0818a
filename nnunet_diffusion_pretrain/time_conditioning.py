"""Timestep conditioning for nnU-Net's planned U-Nets, without renaming any of their modules.

The denoiser *is* the network that nnU-Net plans (PlainConvUNet or ResidualEncoderUNet): its
``encoder`` and ``decoder`` are kept as they are, so every parameter name and shape of the
segmentation network (except ``seg_layers``) is unchanged and transfers 1:1. Conditioning lives in
two extra modules: ``time_embedding`` (diffusers' sinusoidal ``Timesteps`` + ``TimestepEmbedding``
MLP) and ``film`` (a zero-initialised linear layer that yields a per-channel scale and shift for
every encoder and decoder stage). Forward hooks apply ``out * (1 + scale) + shift`` to each stage's
output, so at initialisation the denoiser computes exactly what the plain U-Net computes.
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from torch import nn


class TimeConditionedUNet(nn.Module):
    """Wraps a dynamic-network-architectures U-Net as ``f(x_t, t)``, keeping its module names."""

    def __init__(self, unet: nn.Module, embedding_dim: int | None = None):
        super().__init__()
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        stage_channels = list(self.encoder.output_channels) + \
            [self.encoder.output_channels[-(i + 2)] for i in range(len(self.decoder.stages))]
        base = self.encoder.output_channels[0]
        embedding_dim = embedding_dim or 4 * base
        self.time_embedding = nn.Sequential(
            Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0),
            TimestepEmbedding(base, embedding_dim),
            nn.SiLU(),
        )
        # one linear layer yields every stage's scale and shift at once (one matmul per step)
        self.film = nn.Linear(embedding_dim, 2 * sum(stage_channels))
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        offsets = np.cumsum([0] + [2 * c for c in stage_channels])
        stages = list(self.encoder.stages) + list(self.decoder.stages)
        for stage, start, end in zip(stages, offsets[:-1], offsets[1:]):
            stage.register_forward_hook(self._make_film_hook(int(start), int(end)))
        self._film_params: torch.Tensor | None = None

    def _make_film_hook(self, start: int, end: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            scale, shift = self._film_params[:, start:end].chunk(2, dim=1)
            view = (*scale.shape, *([1] * (output.ndim - 2)))
            return torch.addcmul(shift.view(view), output, 1 + scale.view(view))
        return hook

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self._film_params = self.film(self.time_embedding(timesteps))
        try:
            return self.decoder(self.encoder(x))
        finally:
            self._film_params = None

    def encode(self, x: torch.Tensor, timesteps: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's stage outputs (skips), conditioned on ``timesteps``: features of the
        pretrained backbone, e.g. for a domain-specific image-quality metric."""
        self._film_params = self.film(self.time_embedding(timesteps))
        try:
            return self.encoder(x)
        finally:
            self._film_params = None


def strip_unused_heads(unet: nn.Module) -> nn.Module:
    """Keep only the full-resolution output head of a U-Net built without deep supervision.

    The lower-resolution heads would be parameters without gradients, which DDP (``-num_gpus``)
    rejects; they are ``seg_layers`` and never transferred, so nothing is lost.
    """
    heads = unet.decoder.seg_layers
    for i in range(len(heads) - 1):
        heads[i] = nn.Identity()
    return unet
