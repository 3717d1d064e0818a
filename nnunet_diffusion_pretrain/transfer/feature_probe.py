"""The paper's "linear classification" transfer (Baranchuk et al. 2022): a pixel classifier on the
multi-scale decoder features of a frozen diffusion denoiser.

The input is noised to fixed timesteps with fixed noise (the same for every call, so inference is
deterministic), each noised copy goes through the frozen denoiser (k timesteps = k backbone
passes), and the output of every decoder stage is captured. Upsampling all features to full
resolution and applying a 1x1 convolution to their concatenation is computed in an equivalent but
memory-friendly order: each (timestep, stage) feature map is projected by its own 1x1 convolution
at its native resolution, the projections are upsampled and summed (both steps are linear, so this
equals the projection of the upsampled concatenation), then a small MLP of 1x1 convolutions yields
the class logits. Only the projections and the MLP train.
"""
from __future__ import annotations

from typing import Sequence

import torch
from diffusers import DDPMScheduler
from torch import nn
from torch.nn import functional as F

from nnunet_diffusion_pretrain.diffusion.noise_schedule import DiffusionSettings
from nnunet_diffusion_pretrain.diffusion.time_conditioning import TimeConditionedUNet

DEFAULT_TIMESTEPS = (50, 150, 250)  # low-to-mid noise, as in Baranchuk et al. 2022
NOISE_SEED = 20240223


class DiffusionFeatureClassifier(nn.Module):
    def __init__(self, denoiser: TimeConditionedUNet, num_classes: int, settings: DiffusionSettings,
                 timesteps: Sequence[int] = DEFAULT_TIMESTEPS, hidden_channels: int = 64):
        super().__init__()
        self.denoiser = denoiser.requires_grad_(False).eval()
        # buffers travel with the checkpoint, so inference noises exactly as training did
        self.register_buffer("timesteps", torch.as_tensor(list(timesteps), dtype=torch.long))
        self.register_buffer("betas", settings.ddpm_scheduler().betas.clone())
        self.register_buffer("input_scale", torch.tensor(settings.input_scale))
        self.register_buffer("input_shift", torch.tensor(settings.input_shift))
        stage_channels = [denoiser.encoder.output_channels[-(i + 2)] for i in range(len(denoiser.decoder.stages))]
        conv = denoiser.encoder.conv_op
        self.project = nn.ModuleList(conv(c, hidden_channels, 1) for _ in timesteps for c in stage_channels)
        self.head = nn.Sequential(nn.LeakyReLU(inplace=True), conv(hidden_channels, hidden_channels, 1),
                                  nn.LeakyReLU(inplace=True), conv(hidden_channels, num_classes, 1))
        self._features: list[torch.Tensor] = []
        for stage in denoiser.decoder.stages:
            stage.register_forward_hook(lambda module, inputs, output: self._features.append(output))
        self._noise: dict[tuple, torch.Tensor] = {}

    def use_schedule(self, settings: DiffusionSettings) -> None:
        """Noise as the checkpoint's pretraining did (its schedule and input map, from its record)."""
        self.betas.copy_(settings.ddpm_scheduler().betas)
        self.input_scale.fill_(settings.input_scale)
        self.input_shift.fill_(settings.input_shift)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # probes trained before package 0.7.0 store no input map: theirs was the identity
        state_dict.setdefault(prefix + "input_scale", torch.tensor(1.0))
        state_dict.setdefault(prefix + "input_shift", torch.tensor(0.0))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def noise_scheduler(self) -> DDPMScheduler:
        """diffusers' forward process for the stored betas (what the checkpoint carries)."""
        betas = self.betas.cpu().numpy()
        return DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas, clip_sample=False)

    def train(self, mode: bool = True) -> "DiffusionFeatureClassifier":
        super().train(mode)
        self.denoiser.eval()  # frozen, always in inference mode
        return self

    def fixed_noise(self, shape: tuple[int, ...], index: int, device: torch.device) -> torch.Tensor:
        """The same noise for every sample, tile and call (seeded by the timestep's position)."""
        key = (shape, index, str(device))
        if key not in self._noise:
            generator = torch.Generator().manual_seed(NOISE_SEED + index)
            self._noise[key] = torch.randn(shape, generator=generator).to(device)
        return self._noise[key]

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder-stage outputs for every timestep, in (timestep, stage) order."""
        features, scheduler = [], self.noise_scheduler()
        x = x * self.input_scale + self.input_shift
        for i, t in enumerate(self.timesteps):
            batch_t = t.expand(x.shape[0])
            noise = self.fixed_noise(tuple(x.shape[1:]), i, x.device).expand_as(x)
            self._features = []
            self.denoiser(scheduler.add_noise(x, noise, batch_t), batch_t)
            features += self._features
        self._features = []
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "bilinear" if x.ndim == 4 else "trilinear"
        hidden = sum(F.interpolate(project(f.to(x.dtype)), size=x.shape[2:], mode=mode, align_corners=False)
                     for project, f in zip(self.project, self.features(x)))
        return self.head(hidden)
