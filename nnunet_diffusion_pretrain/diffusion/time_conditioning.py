"""Timestep conditioning for nnU-Net's planned U-Nets, inside every conv block, foldable at transfer.

The denoiser *is* the network that nnU-Net plans (PlainConvUNet or ResidualEncoderUNet): its
``encoder`` and ``decoder`` are kept as they are, so every parameter name and shape of the
segmentation network (except ``seg_layers``) is unchanged and transfers 1:1. Conditioning lives in
two extra modules: ``time_embedding`` (diffusers' sinusoidal ``Timesteps`` + ``TimestepEmbedding``
MLP) and ``film`` (a zero-initialised linear layer that yields a per-channel scale and shift for
every normalisation layer). A forward hook turns each norm's affine output ``g * n(x) + b`` into
``(g * n(x) + b) * (1 + scale) + shift``, before the block's nonlinearity, where the next
convolution's normalisation cannot undo it. At initialisation the denoiser computes exactly what
the plain U-Net computes.

At one fixed timestep the conditioning is an affine change of each norm's weight and bias, so it
folds exactly into them (``folded_state_dict``): a plain U-Net with the folded weights computes
the denoiser's features at that timestep, with no extra module at inference.
"""
from __future__ import annotations

import torch
from diffusers.models.embeddings import Timesteps, TimestepEmbedding
from torch import nn

NORM_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm)  # InstanceNorm and BatchNorm derive from _NormBase
CONDITIONING_PREFIXES = ("time_embedding.", "film.")


def conditioned_norms(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every normalisation layer of the U-Net's encoder and decoder, in module order (each once:
    ``named_modules`` skips the decoder's reference to the encoder)."""
    norms = [(name, m) for name, m in unet.named_modules()
             if isinstance(m, NORM_TYPES) and name.startswith(("encoder.", "decoder."))]
    not_affine = [name for name, m in norms if getattr(m, "weight", None) is None]
    if not_affine:
        raise ValueError(f"timestep conditioning folds into affine normalisation layers; {not_affine[0]} has no "
                         f"weight (plan the network with norm_op_kwargs affine=True)")
    return norms


class TimeConditionedUNet(nn.Module):
    """Wraps a dynamic-network-architectures U-Net as ``f(x_t, t)``, keeping its module names."""

    def __init__(self, unet: nn.Module, embedding_dim: int | None = None):
        super().__init__()
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        norms = conditioned_norms(self)
        base = self.encoder.output_channels[0]
        embedding_dim = embedding_dim or 4 * base
        self.time_embedding = nn.Sequential(
            Timesteps(base, flip_sin_to_cos=True, downscale_freq_shift=0),
            TimestepEmbedding(base, embedding_dim),
            nn.SiLU(),
        )
        # one linear layer yields every norm's scale and shift at once (one matmul per step)
        self.norm_slices: dict[str, tuple[int, int]] = {}
        start = 0
        for name, norm in norms:
            channels = norm.weight.shape[0]
            self.norm_slices[name] = (start, start + 2 * channels)
            norm.register_forward_hook(self._make_film_hook(start, start + 2 * channels))
            start += 2 * channels
        self.film = nn.Linear(embedding_dim, start)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self._film_params: torch.Tensor | None = None

    def _make_film_hook(self, start: int, end: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
            scale, shift = self._film_params[:, start:end].chunk(2, dim=1)
            view = (*scale.shape, *([1] * (output.ndim - 2)))
            return torch.addcmul(shift.view(view), output, 1 + scale.view(view))
        return hook

    def film_parameters(self, timesteps: torch.Tensor) -> torch.Tensor:
        """(N, sum of 2 x channels): every norm's scale and shift for each timestep."""
        return self.film(self.time_embedding(timesteps))

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self._film_params = self.film_parameters(timesteps)
        try:
            return self.decoder(self.encoder(x))
        finally:
            self._film_params = None

    def encode(self, x: torch.Tensor, timesteps: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's stage outputs (skips), conditioned on ``timesteps``: features of the
        pretrained backbone, e.g. for a domain-specific image-quality metric."""
        self._film_params = self.film_parameters(timesteps)
        try:
            return self.encoder(x)
        finally:
            self._film_params = None

    @torch.no_grad()
    def folded_state_dict(self, timestep: int) -> dict[str, torch.Tensor]:
        """The plain U-Net's state dict (no conditioning modules) whose norms compute what this
        denoiser's conditioned norms compute at ``timestep``: weight * (1 + scale), bias * (1 + scale) + shift."""
        params = self.film_parameters(torch.tensor([timestep], device=self.film.weight.device))[0]
        tensors = self.state_dict(keep_vars=True)
        state = {k: v.detach().clone() for k, v in tensors.items() if not k.startswith(CONDITIONING_PREFIXES)}
        keys_of: dict[int, list[str]] = {}  # a norm's tensors appear under several keys (aliases such as
        for key, tensor in tensors.items():  # convs.0.norm and convs.0.all_modules.1, decoder.encoder.*)
            keys_of.setdefault(id(tensor), []).append(key)
        for name, (start, end) in self.norm_slices.items():
            norm = self.get_submodule(name)
            scale, shift = params[start:end].chunk(2)
            for key in keys_of[id(norm.weight)]:
                state[key] = norm.weight.detach() * (1 + scale)
            for key in keys_of[id(norm.bias)]:
                state[key] = norm.bias.detach() * (1 + scale) + shift
        return state


def build_denoiser(plans_manager, configuration_manager, num_input_channels: int) -> TimeConditionedUNet:
    """The U-Net nnU-Net plans for this configuration, predicting one value per input channel,
    with one output head and timestep conditioning: the pretraining network."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    unet = nnUNetTrainer.build_network_architecture(plans_manager, configuration_manager, num_input_channels,
                                                    num_input_channels, enable_deep_supervision=False)
    return TimeConditionedUNet(strip_unused_heads(unet))


def strip_unused_heads(unet: nn.Module) -> nn.Module:
    """Keep only the full-resolution output head of a U-Net built without deep supervision.

    The lower-resolution heads would be parameters without gradients, which DDP (``-num_gpus``)
    rejects; they are ``seg_layers`` and never transferred, so nothing is lost.
    """
    heads = unet.decoder.seg_layers
    for i in range(len(heads) - 1):
        heads[i] = nn.Identity()
    return unet
