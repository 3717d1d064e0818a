"""Per-organ Dice and normalized surface distance (NSD) of one prediction, computed with MONAI.

NSD (the FLARE challenges' boundary metric) is the fraction of both surfaces that lies within a
tolerance (in mm) of the other surface; MONAI's ``compute_surface_dice`` implements it with the
image spacing. Conventions for an organ absent from the reference: both metrics are 1 if the
prediction is empty too and 0 otherwise (MONAI returns NaN there).
"""
from __future__ import annotations

import warnings

import numpy as np
import SimpleITK as sitk
import torch
from monai.metrics import compute_dice, compute_surface_dice

from nnunet_diffusion_pretrain.errors import UserFacingError


def _one_hot(seg: np.ndarray, labels: list[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([seg == 0] + [seg == label for label in labels])[None])


def organ_metrics(prediction_file: str, reference_file: str, labels: dict[str, int], tolerance_mm: float
                  ) -> dict[str, dict[str, float]]:
    """``{organ: {"dice": .., "nsd": ..}}`` for every organ in ``labels`` (background excluded)."""
    prediction, reference = sitk.ReadImage(prediction_file), sitk.ReadImage(reference_file)
    if prediction.GetSize() != reference.GetSize():
        raise UserFacingError(f"{prediction_file} has size {prediction.GetSize()} but its reference "
                              f"{reference_file} has {reference.GetSize()}")
    organs = {name: value for name, value in labels.items() if value != 0 and name != "ignore"}
    pred = _one_hot(sitk.GetArrayViewFromImage(prediction), list(organs.values()))
    ref = _one_hot(sitk.GetArrayViewFromImage(reference), list(organs.values()))
    spacing = tuple(reversed(reference.GetSpacing()))  # numpy axis order
    with warnings.catch_warnings():  # MONAI warns about empty masks, handled below
        warnings.simplefilter("ignore")
        dice = compute_dice(pred, ref, include_background=False, ignore_empty=False)[0]
        nsd = compute_surface_dice(pred, ref, [tolerance_mm] * len(organs), include_background=False,
                                   spacing=spacing)[0]
    out = {}
    for i, name in enumerate(organs):
        ref_empty, pred_empty = not bool(ref[0, i + 1].any()), not bool(pred[0, i + 1].any())
        if ref_empty:
            value = 1.0 if pred_empty else 0.0
            out[name] = {"dice": value, "nsd": value}
        else:
            out[name] = {"dice": float(dice[i]), "nsd": 0.0 if pred_empty else float(nsd[i])}
    return out
