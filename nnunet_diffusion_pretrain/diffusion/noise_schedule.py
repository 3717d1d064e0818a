"""The DDPM forward process and training objective, built on diffusers' schedulers.

Nothing here hand-writes a schedule formula: betas, ``add_noise`` and the v-target come from
``diffusers.DDPMScheduler``; sampling uses a ``DDIMScheduler`` made from the same config.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass(frozen=True)
class DiffusionSettings:
    """What a checkpoint must record so that later stages can rebuild (or refuse) the process."""

    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"  # "linear" (Ho et al.) or "cosine" (Nichol & Dhariwal)
    prediction_type: str = "epsilon"  # or "v_prediction"
    # images are noised as x * input_scale + input_shift (the identity: nnU-Net's normalised
    # intensities as they are; input_range.unit_range_mapping: nnU-Net's clipped CT range to [-1, 1])
    input_scale: float = 1.0
    input_shift: float = 0.0
    # clip each sampling step's predicted x0 to [-1, 1]: right only for images mapped into that range
    clip_sample: bool = False

    def __post_init__(self):
        if self.beta_schedule not in BETA_SCHEDULES:
            raise ValueError(f"beta_schedule must be one of {sorted(BETA_SCHEDULES)}, got {self.beta_schedule!r}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {self.prediction_type!r}")
        if not self.input_scale > 0:
            raise ValueError(f"input_scale must be positive, got {self.input_scale!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_record(cls, record: dict) -> "DiffusionSettings":
        """The settings a checkpoint's record stores; fields it predates keep their defaults."""
        return cls(**{f.name: record[f.name] for f in fields(cls) if f.name in record})

    def to_diffusion_space(self, images: torch.Tensor) -> torch.Tensor:
        """nnU-Net's normalised images -> the space the diffusion process noises."""
        return images * self.input_scale + self.input_shift

    def to_network_space(self, images: torch.Tensor) -> torch.Tensor:
        """Generated images -> nnU-Net's normalised intensities."""
        return (images - self.input_shift) / self.input_scale

    def ddpm_scheduler(self) -> DDPMScheduler:
        return DDPMScheduler(num_train_timesteps=self.num_train_timesteps,
                             beta_schedule=BETA_SCHEDULES[self.beta_schedule],
                             prediction_type=self.prediction_type, clip_sample=self.clip_sample, clip_sample_range=1.0)

    def ddim_scheduler(self) -> DDIMScheduler:
        return DDIMScheduler.from_config(self.ddpm_scheduler().config)


def training_target(scheduler: DDPMScheduler, x0: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    """What the network regresses: the noise (epsilon) or the velocity (v)."""
    if scheduler.config.prediction_type == "epsilon":
        return noise
    return scheduler.get_velocity(x0, noise, timesteps)


def denoising_loss(model: nn.Module, scheduler: DDPMScheduler, x0: torch.Tensor, timesteps: torch.Tensor,
                   noise: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error of the model's prediction at the given timesteps (the DDPM simple loss)."""
    if noise is None:
        noise = torch.randn_like(x0)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    prediction = model(x_t, timesteps)
    return nn.functional.mse_loss(prediction.float(), training_target(scheduler, x0, noise, timesteps).float())


def predicted_clean_image(scheduler: DDPMScheduler, model_output: torch.Tensor, x_t: torch.Tensor,
                          timestep: int) -> torch.Tensor:
    """The model's one-step estimate of x0 from x_t at one timestep (how much noise it removes)."""
    return scheduler.step(model_output, timestep, x_t).pred_original_sample
