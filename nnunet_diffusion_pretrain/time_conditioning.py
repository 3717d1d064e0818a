"""Timestep conditioning for nnU-Net's planned U-Nets, without renaming any of their modules.

The denoiser *is* the network that nnU-Net plans (PlainConvUNet or ResidualEncoderUNet): its
``encoder`` and ``decoder`` are kept as they are, so every parameter name and shape of the
segmentation network (except ``seg_layers``) is unchanged and transfers 1:1. Conditioning lives in
two extra modules: ``time_embedding`` (diffusers' sinusoidal ``Timesteps`` + ``TimestepEmbedding``
MLP) and ``film`` (one zero-initialised linear layer per encoder and decoder stage that yields a
per-channel scale and shift). Forward hooks apply ``out * (1 + scale) + shift`` to each stage's
output, so at initialisation the denoiser computes exactly what the plain U-Net computes.
"""
from __future__ import annotations

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
        self.film = nn.ModuleList(nn.Linear(embedding_dim, 2 * c) for c in stage_channels)
        for layer in self.film:
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        stages = list(self.encoder.stages) + list(self.decoder.stages)
        for index, stage in enumerate(stages):
            stage.register_forward_hook(self._make_film_hook(index))
        self._embedding: torch.Tensor | None = None

    def _make_film_hook(self, index: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            scale, shift = self.film[index](self._embedding).chunk(2, dim=1)
            view = (*scale.shape, *([1] * (output.ndim - 2)))
            return output * (1 + scale.view(view)) + shift.view(view)
        return hook

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self._embedding = self.time_embedding(timesteps).to(x.dtype)
        try:
            return self.decoder(self.encoder(x))
        finally:
            self._embedding = None


def strip_unused_heads(unet: nn.Module) -> nn.Module:
    """Keep only the full-resolution output head of a U-Net built without deep supervision.

    The lower-resolution heads would be parameters without gradients, which DDP (``-num_gpus``)
    rejects; they are ``seg_layers`` and never transferred, so nothing is lost.
    """
    heads = unet.decoder.seg_layers
    for i in range(len(heads) - 1):
        heads[i] = nn.Identity()
    return unet
