"""A derived dataset for slice budgets ("four labelled slices"): in each training volume only the
chosen 2D slices keep their labels, every other voxel is nnU-Net's ignore label.

The derived dataset reuses the source dataset's plans (copied with nnU-Net's
``move_plans_between_datasets`` and preprocessed with them): planning on sparse labels would
distort the CT intensity statistics. Held-out cases keep their full labels. Slices are chosen
among the slices that contain foreground, evenly spread over that range, so the choice is
reproducible without a random generator.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from nnunetv2.utilities.utils import get_filenames_of_train_images_and_targets

from nnunet_diffusion_pretrain.pool.derived_dataset import (copy_images, derived_raw_folder, ignore_label,
                                                       preprocess_on_source_plans)
from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.transfer.lowlabel_splits import KEEP_EARLIER_REPEATS, van_der_corput
from nnunet_diffusion_pretrain.planned_dataset import PlannedDataset


def spread_slices(foreground: np.ndarray, count: int, phase: float = 0.5) -> list[int]:
    """``count`` distinct slice indices evenly spread over the foreground slices (``phase`` in
    [0, 1) shifts the grid, so reusing a volume for another repeat picks other slices)."""
    if len(foreground) < count:
        raise UserFacingError(f"asked for {count} labelled slices but the volume has only {len(foreground)} "
                              f"slices with foreground")
    positions = ((np.arange(count) + phase) / count * len(foreground)).astype(int)
    return sorted(int(foreground[min(p, len(foreground) - 1)]) for p in positions)


def _derived_case(volume: str, count: int, repeat: int) -> str:
    return f"{volume}_s{count}r{repeat}"


def _check_repeats_keep_their_volumes(labels: Path, file_ending: str, volume_per_repeat: list[str],
                                      slice_counts: list[int]) -> None:
    """Refuse, before writing anything, to give a (slice count, repeat) that already has a derived
    case another volume: its finished runs would be reported under the wrong volume."""
    for count in slice_counts:
        for repeat, volume in enumerate(volume_per_repeat):
            suffix = f"_s{count}r{repeat}{file_ending}"
            existing = sorted(p.name[: -len(file_ending)] for p in labels.glob(f"*{suffix}"))
            wanted = _derived_case(volume, count, repeat)
            if existing and existing != [wanted]:
                raise UserFacingError(f"{labels} already holds {', '.join(existing)} for repeat {repeat} with "
                                      f"{count} slices; these arguments would label {wanted}. {KEEP_EARLIER_REPEATS}")


def write_sparse_slice_dataset(source: PlannedDataset, target_id: int, held_out: list[str],
                               volume_per_repeat: list[str], slice_counts: list[int], plans_identifier: str,
                               num_processes: int = 2, configuration: str = "2d"
                               ) -> tuple[str, list[tuple[int, int, str, list[int]]]]:
    """Create (or extend) the derived dataset; returns its name and, for every (slice count,
    repeat), the derived case id and the slices that keep labels."""
    source_raw = Path(os.environ["nnUNet_raw"]) / source.name
    folder = derived_raw_folder(target_id, f"{source.name.split('_', 1)[1]}Slices",
                                {"source": source.name, "plans": plans_identifier, "held_out": sorted(held_out)})
    dataset_json = source.dataset_json
    file_ending = dataset_json["file_ending"]
    files = get_filenames_of_train_images_and_targets(str(source_raw), dataset_json)
    rw = source.plans_manager.image_reader_writer_class()
    axis = source.plans_manager.transpose_forward[0]  # the raw array axis that nnU-Net's 2d slices
    images, labels = folder / "imagesTr", folder / "labelsTr"
    _check_repeats_keep_their_volumes(labels, file_ending, volume_per_repeat, slice_counts)
    for case in held_out:
        if not (labels / f"{case}{file_ending}").is_file():
            copy_images(files[case]["images"], images, case, file_ending)
            shutil.copy(files[case]["label"], labels / f"{case}{file_ending}")
    ignore = ignore_label(dataset_json["labels"])
    chosen = []
    for count in slice_counts:
        for repeat, volume in enumerate(volume_per_repeat):
            reuse = volume_per_repeat[:repeat].count(volume)
            derived = _derived_case(volume, count, repeat)
            seg, properties = rw.read_seg(files[volume]["label"])
            seg = seg[0]
            foreground = np.flatnonzero(np.any(np.moveaxis(seg, axis, 0) > 0, axis=(1, 2)))
            # 1/2, 1/4, 3/4, ...: the n-th reuse of a volume shifts its slices the same way however many repeats
            slices = spread_slices(foreground, count, float(van_der_corput(reuse + 1, 2)))
            chosen.append((count, repeat, derived, slices))
            if (labels / f"{derived}{file_ending}").is_file():
                continue
            sparse = np.full_like(seg, ignore, dtype=np.uint8 if ignore < 255 else np.uint16)
            index = [slice(None)] * 3
            index[axis] = slices
            sparse[tuple(index)] = seg[tuple(index)]
            copy_images(files[volume]["images"], images, derived, file_ending)
            rw.write_seg(sparse, str(labels / f"{derived}{file_ending}"), properties)
    labels_json = {k: v for k, v in dataset_json["labels"].items() if k != "ignore"} | {"ignore": ignore}
    preprocess_on_source_plans(source, folder, target_id, labels_json,
                               f"{source.name} with only a few labelled slices per training volume (others: ignore "
                               f"label {ignore}); held-out cases fully labelled", plans_identifier, configuration,
                               num_processes)
    return folder.name, chosen
