"""The forward process comes from diffusers and behaves as DDPM defines it."""
from __future__ import annotations

import pytest
import torch

from nnunet_diffusion_pretrain.diffusion.noise_schedule import (DiffusionSettings, denoising_loss, predicted_clean_image,
                                                      training_target)


def test_settings_validate_and_build_schedulers():
    with pytest.raises(ValueError):
        DiffusionSettings(beta_schedule="quadratic")
    with pytest.raises(ValueError):
        DiffusionSettings(prediction_type="sample")
    linear, cosine = DiffusionSettings().ddpm_scheduler(), DiffusionSettings(beta_schedule="cosine").ddpm_scheduler()
    assert len(linear.betas) == 1000 and linear.config.clip_sample is False
    assert torch.isclose(linear.betas[0], torch.tensor(1e-4)) and torch.isclose(linear.betas[-1], torch.tensor(0.02))
    assert not torch.allclose(linear.alphas_cumprod, cosine.alphas_cumprod)
    assert DiffusionSettings().ddim_scheduler().config.num_train_timesteps == 1000


def test_settings_round_trip_through_a_record_and_older_records_mean_no_input_map():
    settings = DiffusionSettings(beta_schedule="cosine", input_scale=0.25, input_shift=0.5)
    assert DiffusionSettings.from_record({**settings.to_dict(), "plans_name": "x"}) == settings
    old = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}
    assert DiffusionSettings.from_record(old) == DiffusionSettings()
    x = torch.randn(2, 1, 4, 4)
    assert torch.allclose(settings.to_diffusion_space(x), x * 0.25 + 0.5)
    assert torch.allclose(settings.to_network_space(settings.to_diffusion_space(x)), x, atol=1e-6)
    with pytest.raises(ValueError, match="input_scale"):
        DiffusionSettings(input_scale=0.0)


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_a_perfect_model_recovers_the_clean_image(prediction_type):
    scheduler = DiffusionSettings(prediction_type=prediction_type).ddpm_scheduler()
    x0, noise = torch.randn(3, 1, 8, 8), torch.randn(3, 1, 8, 8)
    t = 400
    timesteps = torch.full((3,), t)
    x_t = scheduler.add_noise(x0, noise, timesteps)
    oracle = training_target(scheduler, x0, noise, timesteps)
    assert torch.allclose(predicted_clean_image(scheduler, oracle, x_t, t), x0, atol=1e-4)

    class Oracle(torch.nn.Module):
        def forward(self, x, ts):
            return oracle
    assert denoising_loss(Oracle(), scheduler, x0, timesteps, noise) < 1e-10
    assert denoising_loss(Oracle(), scheduler, x0, timesteps, torch.randn_like(noise)) > 0.1
