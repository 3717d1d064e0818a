"""A smaller 2D configuration added to a dataset's plans the nnU-Net way: it inherits from ``2d``
and overrides only spacing, patch size, batch size and network width/depth.

This is how the benchmark's ``cpu`` preset makes real comparisons affordable on a laptop-class
machine: images are resampled to a coarser in-plane spacing (so a whole slice fits the patch), the
U-Net keeps nnU-Net's topology but fewer stages and features. Predictions are still written and
evaluated at the original resolution (nnU-Net resamples back), so Dice and NSD stay comparable.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import write_json_atomically


def reduced_2d_configuration(plans: dict, plans_identifier: str, name: str, patch_edge: int, batch_size: int,
                             n_stages: int, base_features: int, max_features: int) -> dict:
    """The configuration entry: in-plane spacing scaled so the median slice is about ``patch_edge``
    voxels wide (never finer than planned), a patch that covers the median slice (at most
    ``patch_edge``), the U-Net truncated to ``n_stages`` (or the planned number if fewer)."""
    base = plans["configurations"]["2d"]
    arch = copy.deepcopy(base["architecture"])
    kwargs = arch["arch_kwargs"]
    planned_stages = kwargs["n_stages"]
    n_stages = min(n_stages, planned_stages)  # small images: nnU-Net already planned fewer stages
    divisor = 2 ** (n_stages - 1)
    if patch_edge % divisor:
        raise UserFacingError(f"patch edge {patch_edge} must be divisible by 2^(n_stages-1) = {divisor}")
    factor = max(1.0, max(base["median_image_size_in_voxels"]) / patch_edge)
    median = [m / factor for m in base["median_image_size_in_voxels"]]
    for key, value in list(kwargs.items()):  # per-stage lists (n_conv_per_stage, n_blocks_per_stage, ...)
        if isinstance(value, list) and len(value) in (planned_stages, planned_stages - 1) and key != "features_per_stage":
            kwargs[key] = value[: n_stages - (planned_stages - len(value))]
    kwargs["n_stages"] = n_stages
    kwargs["features_per_stage"] = [min(base_features * 2 ** i, max_features) for i in range(n_stages)]
    kwargs["strides"] = [[1, 1]] + [[2, 2]] * (n_stages - 1)
    return {
        "inherits_from": "2d",
        "data_identifier": f"{plans_identifier}_{name}",
        "spacing": [s * factor for s in base["spacing"]],
        "median_image_size_in_voxels": [round(m) for m in median],
        "patch_size": [min(patch_edge, math.ceil(m / divisor) * divisor) for m in median],
        "batch_size": batch_size,
        "architecture": arch,
    }


def add_configuration(plans_file: Path, name: str, entry: dict) -> None:
    """Add ``entry`` as configuration ``name``; an existing, different one is never replaced."""
    plans = json.loads(plans_file.read_text())
    existing = plans["configurations"].get(name)
    if existing is not None:
        if existing != entry:
            raise UserFacingError(f"{plans_file} already has a different configuration {name!r}; remove it or "
                                  f"choose another name")
        return
    plans["configurations"][name] = entry
    write_json_atomically(plans_file, plans)
