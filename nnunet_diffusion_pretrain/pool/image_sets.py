"""Real and generated images brought to the same footing for image-quality metrics.

Matching rule (documented in docs/sampling.md): every file is read with SimpleITK; 3D volumes are cut
into axial slices (array axis 0), 2D samples are one slice. Real images are first resampled
in-plane (linear) to the generated images' spacing, read from their headers (the sampler writes
the configuration's spacing), then every slice is centre-cropped or padded (with the slice's
minimum) to the generated images' size (the configuration's patch size). Intensities: for the
Inception network, one window [low, high] (default: the real set's 0.5/99.5 percentiles) mapped
to 0..255 and repeated to 3 channels; for the nnU-Net encoder, nnU-Net's own normalisation of
the dataset's configuration.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.intensity_mapping import dataset_normalization
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset

IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")


def image_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserFacingError(f"{folder} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.name.endswith(IMAGE_ENDINGS))
    if not files:
        raise UserFacingError(f"{folder} holds no images ({', '.join(IMAGE_ENDINGS)})")
    return files


def _read(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise UserFacingError(f"{path}: cannot be read ({str(e).strip().splitlines()[-1]})") from e
    if image.GetNumberOfComponentsPerPixel() != 1 or image.GetDimension() not in (2, 3):
        raise UserFacingError(f"{path}: expected a single-channel 2D or 3D image, got {image.GetDimension()}D "
                              f"with {image.GetNumberOfComponentsPerPixel()} components")
    return image


def slice_geometry(folder: Path) -> tuple[tuple[int, int], tuple[float, float]]:
    """(rows, columns) and in-plane spacing (row, column) of the first image in ``folder``."""
    image = _read(image_files(folder)[0])
    return tuple(image.GetSize()[:2][::-1]), tuple(image.GetSpacing()[:2][::-1])


def _resample_in_plane(image: sitk.Image, spacing_rc: tuple[float, float]) -> sitk.Image:
    spacing = list(image.GetSpacing())
    spacing[0], spacing[1] = spacing_rc[1], spacing_rc[0]
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), spacing,
                         image.GetDirection(), 0.0, sitk.sitkFloat32)


def centre_fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = np.full(size, image.min(), dtype=np.float32)
    src = [slice(max(0, (n - s) // 2), max(0, (n - s) // 2) + min(n, s)) for n, s in zip(image.shape, size)]
    dst = [slice(max(0, (s - n) // 2), max(0, (s - n) // 2) + min(n, s)) for n, s in zip(image.shape, size)]
    out[tuple(dst)] = image[tuple(src)]
    return out


def read_slices(folder: Path, size: tuple[int, int], spacing: tuple[float, float] | None = None,
                max_slices: int | None = None, seed: int = 0) -> np.ndarray:
    """All slices of all images in ``folder`` as (N, rows, columns) float32, resampled to ``spacing``
    if given and fitted to ``size``; a seeded random subset if ``max_slices`` is given."""
    slices = []
    for path in image_files(folder):
        image = _read(path)
        if spacing is not None and tuple(image.GetSpacing()[:2][::-1]) != tuple(spacing):
            image = _resample_in_plane(image, spacing)
        array = sitk.GetArrayFromImage(image).astype(np.float32)
        for s in (array[None] if array.ndim == 2 else array):
            slices.append(centre_fit(s, size))
    stack = np.stack(slices)
    if max_slices is not None and len(stack) > max_slices:
        stack = stack[np.sort(np.random.default_rng(seed).choice(len(stack), max_slices, replace=False))]
    return stack


def windowed_uint8(slices: np.ndarray, low: float, high: float) -> torch.Tensor:
    """Inception input: (N, 3, H, W) uint8 from one intensity window."""
    scaled = np.clip((slices - low) / max(high - low, 1e-8), 0, 1) * 255
    return torch.from_numpy(np.round(scaled).astype(np.uint8))[:, None].repeat(1, 3, 1, 1)


def nnunet_normalised(slices: np.ndarray, dataset: PlannedDataset) -> torch.Tensor:
    """nnU-Net encoder input: (N, 1, H, W) normalised as the dataset's configuration does."""
    if dataset.num_input_channels != 1:
        raise UserFacingError(f"{dataset.name} has {dataset.num_input_channels} input channels; the image-quality "
                              f"metrics support single-channel datasets")
    cm = dataset.configuration_manager
    normalizer = dataset_normalization(cm.normalization_schemes[0], cm.use_mask_for_norm[0],
                                       dataset.plans["foreground_intensity_properties_per_channel"]["0"])
    out = np.empty_like(slices)
    for i, image in enumerate(slices):  # slice by slice: per-image schemes (MRI z-score) see one slice, as samples do
        out[i] = normalizer.run(image.copy(), np.zeros(image.shape, dtype=np.int8))
    return torch.from_numpy(out)[:, None]
