"""What the pretraining stage reads: images of the labelled training cases plus the unlabeled
pool, through nnU-Net's own data loader, with augmentation that keeps the generative target real.
"""
from __future__ import annotations

import hashlib
import os
from typing import Sequence

import blosc2
import numpy as np
from batchgeneratorsv2.helpers.scalar_type import RandomScalar
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.compose import ComposeTransforms
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform, Convert3DTo2DTransform
from acvl_utils.cropping_and_padding.bounding_boxes import crop_and_pad_nd
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader
from nnunetv2.training.dataloading.nnunet_dataset import nnUNetBaseDataset
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunet_diffusion_pretrain.pool.unlabeled_pool import PoolManifest

LABELLED, POOL = "labelled", "pool"
ROTATION = (-15. / 360 * 2. * np.pi, 15. / 360 * 2. * np.pi)  # upright anatomy, mildly turned, never mirrored
NO_LABELS = LabelManager({"background": 0}, regions_class_order=None)


def background_value(data) -> np.ndarray:
    """Per channel, the median of the in-plane border voxels of a normalised (c, z, y, x) case: air
    for CT (the lower clip bound), 0 outside the mask of masked z-scoring."""
    borders = [np.asarray(data[:, :, i, :]).reshape(data.shape[0], -1) for i in (0, -1)] + \
              [np.asarray(data[:, :, :, i]).reshape(data.shape[0], -1) for i in (0, -1)]
    return np.median(np.concatenate(borders, axis=1), axis=1).astype(np.float32)


def pad_to_patch(data, patch_size: Sequence[int], fill: np.ndarray):
    """``data`` (c, *spatial) padded evenly on both sides to at least ``patch_size`` (the last
    len(patch_size) axes) with ``fill`` per channel; unchanged when it is large enough already.
    nnU-Net's loader would pad with 0, which after CT normalisation is mid-grey tissue, not air."""
    spatial = data.shape[1:]
    target = list(spatial[:len(spatial) - len(patch_size)]) + \
        [max(s, p) for s, p in zip(spatial[len(spatial) - len(patch_size):], patch_size)]
    if list(spatial) == target:
        return data
    out = np.empty((data.shape[0], *target), dtype=np.float32)
    out[:] = fill.reshape(-1, *([1] * len(target)))
    offsets = [(t - s) // 2 for s, t in zip(spatial, target)]
    out[(slice(None), *(slice(o, o + s) for o, s in zip(offsets, spatial)))] = np.asarray(data[:])
    return out


class PretrainingImages:
    """Images from two sources behind nnU-Net's dataset interface (``identifiers``, ``load_case``).

    Labels are never read: ``load_case`` returns an all-zero, zero-memory stand-in where nnU-Net's
    loader expects a segmentation, and no foreground locations (patches are drawn uniformly). Cases
    smaller than the patch come padded with their own background value (``pad_to_patch``).
    """

    def __init__(self, labelled: nnUNetBaseDataset | None, pool: PoolManifest, pool_case_ids: Sequence[str],
                 patch_size: Sequence[int]):
        self._labelled = labelled
        self._pool = pool
        self._patch_size = list(patch_size)
        self._background: dict[str, np.ndarray] = {}
        labelled_ids = list(labelled.identifiers) if labelled is not None else []
        self.identifiers = [f"{LABELLED}/{i}" for i in labelled_ids] + [f"{POOL}/{i}" for i in pool_case_ids]

    def __len__(self) -> int:
        return len(self.identifiers)

    def load_case(self, identifier: str):
        source, key = identifier.split("/", 1)
        if source == LABELLED:
            data = self._labelled.load_case(key)[0]
        else:
            data = blosc2.open(urlpath=str(self._pool.data_file(key)), mode="r", dparams={"nthreads": 1},
                               **({} if os.name == "nt" else {"mmap_mode": "r"}))
        if any(s < p for s, p in zip(data.shape[1:][::-1], self._patch_size[::-1])):
            if identifier not in self._background:
                self._background[identifier] = background_value(data)
            data = pad_to_patch(data, self._patch_size, self._background[identifier])
        no_labels = np.broadcast_to(np.zeros(1, dtype=np.int8), (1, *data.shape[1:]))
        return data, no_labels, None, {"class_locations": None}


def center_patches(images: PretrainingImages, patch_size: Sequence[int], n: int) -> np.ndarray:
    """Central patches (the middle slice for 2D) of the first ``n`` cases, for showing beside samples."""
    patches = []
    for identifier in images.identifiers[:n]:
        data = images.load_case(identifier)[0]
        shape = data.shape[1:]
        size = [1, *patch_size] if len(patch_size) == 2 else list(patch_size)
        bbox = [[(s - p) // 2, (s - p) // 2 + p] for s, p in zip(shape, size)]
        patch = crop_and_pad_nd(np.asarray(data[:]), bbox, 0)
        patches.append(patch[:, 0] if len(patch_size) == 2 else patch)
    return np.stack(patches) if patches else None


def split_pool(case_ids: Sequence[str], held_out_fraction: float = 0.1) -> tuple[list[str], list[str]]:
    """Deterministic train / held-out split of pool cases by a hash of the case id, so adding cases
    never moves an existing case across. At least one case is held out once there are two."""
    def bucket(case_id: str) -> float:
        return int(hashlib.sha1(case_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF

    ranked = sorted(case_ids, key=bucket)
    held_out = [c for c in ranked if bucket(c) < held_out_fraction]
    if not held_out and len(ranked) >= 2:
        held_out = ranked[:1]
    return [c for c in case_ids if c not in held_out], held_out


def dummy_2d_augmentation(patch_size: Sequence[int]) -> bool:
    """Stock nnU-Net's rule: anisotropic 3D patches are augmented slice by slice."""
    return len(patch_size) == 3 and max(patch_size) / patch_size[0] > ANISO_THRESHOLD


def pretraining_loader(images: PretrainingImages, patch_size: Sequence[int], batch_size: int) -> nnUNetDataLoader:
    """What stock ``get_dataloaders`` builds for the pretraining trainer (patches cut at their final
    size, drawn uniformly, spatial augmentation only), for looking at batches outside training."""
    transforms = generative_training_transforms(patch_size, ROTATION, dummy_2d_augmentation(patch_size))
    return nnUNetDataLoader(images, batch_size, patch_size, patch_size, NO_LABELS, oversample_foreground_percent=0.0,
                            transforms=transforms)


def generative_training_transforms(patch_size: Sequence[int], rotation: RandomScalar,
                                   do_dummy_2d_data_aug: bool) -> BasicTransform:
    """Spatial augmentation only: mild rotation and scaling, borders replicated.

    No intensity transforms (noise, blur, gamma, contrast, simulated low resolution) because they
    would change the very distribution the model must learn to generate, and no mirroring because
    a mirrored abdomen is not anatomy the model should produce.
    """
    transforms = []
    spatial_patch = patch_size[1:] if do_dummy_2d_data_aug else patch_size
    if do_dummy_2d_data_aug:
        transforms.append(Convert3DTo2DTransform())
    transforms.append(SpatialTransform(
        spatial_patch, patch_center_dist_from_border=0, random_crop=False, p_elastic_deform=0,
        p_rotation=0.2, rotation=rotation, p_scaling=0.2, scaling=(0.85, 1.15),
        p_synchronize_scaling_across_axes=1, padding_mode_image="border"))
    if do_dummy_2d_data_aug:
        transforms.append(Convert2DTo3DTransform())
    return ComposeTransforms(transforms)
