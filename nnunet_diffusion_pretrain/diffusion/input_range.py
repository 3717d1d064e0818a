"""Map nnU-Net's normalised CT intensities to [-1, 1], the range DDPM's noise schedules assume.

nnU-Net's ``CTNormalization`` clips to the 0.5/99.5 foreground percentiles and z-scores with the
foreground mean and std, so its images span [(p0.5 - mean) / std, (p99.5 - mean) / std], about
[-4, 3] on the BTCV subset: four times the spread of the [-1, 1] images DDPM's linear schedule was
designed for, so each timestep leaves far more signal than the schedule intends. The affine map
here sends that clipped range to exactly [-1, 1]. Per-image schemes (MRI's ``ZScoreNormalization``)
have no fixed range, so they are refused.
"""
from __future__ import annotations

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.intensity_mapping import INVERTIBLE


def unit_range_mapping(plans_manager: PlansManager, configuration_manager: ConfigurationManager) -> dict[str, float]:
    """``input_scale`` and ``input_shift`` (DiffusionSettings fields) that map the configuration's
    one CT-normalised channel from its clipped range onto [-1, 1]."""
    schemes = configuration_manager.normalization_schemes
    if schemes != [INVERTIBLE]:
        raise UserFacingError(f"mapping to [-1, 1] needs one {INVERTIBLE} channel (a fixed intensity range); "
                              f"this configuration normalises with {schemes}")
    p = plans_manager.foreground_intensity_properties_per_channel["0"]
    std = max(p["std"], 1e-8)
    low, high = (p["percentile_00_5"] - p["mean"]) / std, (p["percentile_99_5"] - p["mean"]) / std
    if not high > low:
        raise UserFacingError(f"the plans' foreground intensity percentiles span nothing ({low} to {high})")
    scale = 2.0 / (high - low)
    return {"input_scale": scale, "input_shift": -1.0 - low * scale}
