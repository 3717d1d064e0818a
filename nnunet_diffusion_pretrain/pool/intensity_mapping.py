"""Map images from nnU-Net's normalised network space back to the dataset's intensity scale.

nnU-Net's ``CTNormalization`` clips to the 0.5/99.5 foreground percentiles and z-scores with the
foreground mean and std of the whole training set (stored in the plans), so it has an exact
inverse on the clipped range: Hounsfield units for raw CT, the dataset's own scale otherwise.
Per-image schemes (``ZScoreNormalization`` for MRI, ``RescaleTo01Normalization``...) keep no
global statistics, so there is nothing to map back to: those images stay in network space and the
caller is told so.
"""
from __future__ import annotations

from pathlib import Path

import nnunetv2
import numpy as np
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ImageNormalization
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

INVERTIBLE = "CTNormalization"


def dataset_normalization(scheme: str, use_mask_for_norm: bool, intensity_properties: dict) -> ImageNormalization:
    """nnU-Net's normalisation object for one channel of a configuration (its scheme name, mask
    flag and the plans' foreground intensity properties of that channel)."""
    cls = recursive_find_python_class(str(Path(nnunetv2.__path__[0]) / "preprocessing" / "normalization"), scheme,
                                      "nnunetv2.preprocessing.normalization")
    return cls(use_mask_for_norm=use_mask_for_norm, intensityproperties=intensity_properties)


def to_dataset_intensities(images: np.ndarray, schemes: list[str], properties: dict[str, dict]
                           ) -> tuple[np.ndarray, list[str]]:
    """``images`` shaped (n, channels, *spatial); ``schemes`` the configuration's
    normalization_schemes, ``properties`` the plans' foreground_intensity_properties_per_channel.
    Returns the mapped copy and, per channel, what scale it is on."""
    out = images.astype(np.float32, copy=True)
    scales = []
    for channel, scheme in enumerate(schemes):
        if scheme == INVERTIBLE:
            p = properties[str(channel)]
            mapped = out[:, channel] * max(p["std"], 1e-8) + p["mean"]
            out[:, channel] = np.clip(mapped, p["percentile_00_5"], p["percentile_99_5"])
            scales.append("dataset intensities (Hounsfield units for raw CT), clipped to the 0.5-99.5 "
                          "foreground percentiles as nnU-Net does")
        else:
            scales.append(f"nnU-Net network space ({scheme} normalises each image on its own: no global scale)")
    return out, scales
