"""Synthetic training cases: generated images written as raw nnU-Net cases, and pseudo-labels that
keep only a labelling model's confident voxels (the rest becomes nnU-Net's ignore label)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager


def write_generated_images(samples: np.ndarray, plans_manager: PlansManager, configuration: str, folder: Path,
                           prefix: str, file_ending: str) -> list[str]:
    """Write 2D samples (n, channels, H, W; dataset intensities) as one-slice raw volumes in the
    dataset's axis order and spacing (the slice axis takes the plans' median spacing). Returns the
    case ids."""
    cm = plans_manager.get_configuration(configuration)
    if len(cm.patch_size) != 2:
        raise ValueError("synthetic cases are generated for 2D configurations")
    backward = plans_manager.transpose_backward
    spacing_transposed = [plans_manager.plans["original_median_spacing_after_transp"][0], *cm.spacing]
    spacing = [spacing_transposed[i] for i in backward]  # numpy (z, y, x) order of the raw images
    folder.mkdir(parents=True, exist_ok=True)
    case_ids = []
    for i, sample in enumerate(samples):
        case = f"{prefix}{i:04d}"
        for channel, image in enumerate(sample):
            array = np.transpose(image[None], backward).astype(np.float32)
            itk = sitk.GetImageFromArray(array)
            itk.SetSpacing([float(s) for s in spacing[::-1]])
            sitk.WriteImage(itk, str(folder / f"{case}_{channel:04d}{file_ending}"), True)
        case_ids.append(case)
    return case_ids


def confident_labels(probabilities: np.ndarray, threshold: float, ignore: int) -> tuple[np.ndarray, float]:
    """Arg-max labels where the top class probability reaches ``threshold``, ``ignore`` elsewhere;
    and the fraction of voxels kept."""
    labels = probabilities.argmax(axis=0).astype(np.uint8 if ignore < 255 else np.uint16)
    keep = probabilities.max(axis=0) >= threshold
    labels[~keep] = ignore
    return labels, float(keep.mean())
