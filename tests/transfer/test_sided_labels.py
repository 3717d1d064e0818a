"""Labels with a side: found in dataset.json, and the ``_keepSides`` augmentation never moves a
one-sided marker across the midline, where nnU-Net's default moves it in many draws."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nnunet_diffusion_pretrain.transfer.sided_labels import sided_labels
from nnunet_diffusion_pretrain.training import nnUNetTrainerBudget, nnUNetTrainerBudget_keepSides

DRAWS = 300


@pytest.mark.parametrize("names, sided", [
    (["background", "liver", "right_kidney", "left_kidney"], ["right_kidney", "left_kidney"]),
    (["background", "Kidney (L)", "Kidney (R)", "spleen"], ["Kidney (L)", "Kidney (R)"]),
    (["background", "leftAdrenal", "rt-lung", "aorta"], ["leftAdrenal", "rt-lung"]),
    (["background", "vertebrae_L1", "liver", "bright_spot"], []),
])
def test_sides_are_read_from_label_names(names, sided):
    assert sided_labels({"labels": {n: i for i, n in enumerate(names)}}) == sided


def marker_columns(trainer_class, planned_phantom, nnunet_env, monkeypatch) -> tuple[dict, list[float]]:
    """The trainer's own augmentation settings and training transforms, applied DRAWS times to an
    image whose only label is a small marker left of the midline; the marker's mean column, relative
    to the patch centre, in every draw where it stays in the patch."""
    for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(key, nnunet_env[key])
    preprocessed = planned_phantom["preprocessed"]
    plans = json.loads((preprocessed / "nnUNetPlans.json").read_text())
    plans["continue_training"] = False  # what nnU-Net's own entry point adds before building a trainer
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    trainer = trainer_class(plans, "2d", 0, dataset_json, device=torch.device("cpu"))
    rotation, dummy_2d, initial, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    patch = list(trainer.configuration_manager.patch_size)
    transforms = trainer.get_training_transforms(patch, rotation, None, mirror_axes, dummy_2d,
                                                 foreground_labels=[1, 2, 3, 4])
    shape = [int(s) for s in initial]
    segmentation = torch.zeros((1, *shape), dtype=torch.int16)
    cy, cx = shape[0] // 2, shape[1] // 2 - int(0.2 * patch[1])
    segmentation[0, cy - 2:cy + 3, cx - 2:cx + 3] = 2
    generator = torch.Generator().manual_seed(0)
    np.random.seed(0)
    columns = []
    for _ in range(DRAWS):
        image = torch.randn((1, *shape), generator=generator)
        out = transforms(image=image, segmentation=segmentation.clone())
        ys, xs = np.nonzero(out["segmentation"][0].numpy() == 2)
        if len(xs):
            columns.append(float(xs.mean()) - (patch[1] - 1) / 2)
    return trainer.method_settings["augmentation"], columns


def test_keep_sides_never_moves_the_marker_across_the_midline(planned_phantom, nnunet_env, monkeypatch):
    augmentation, columns = marker_columns(nnUNetTrainerBudget_keepSides, planned_phantom, nnunet_env, monkeypatch)
    assert augmentation == {"rotation_degrees": [-15.0, 15.0], "mirror_axes": [], "tta_mirror_axes": []}
    assert len(columns) > 0.9 * DRAWS, "the marker stays in the patch"
    assert max(columns) < 0, f"the marker crossed to the other side in {sum(c > 0 for c in columns)} draws"


def test_stock_augmentation_moves_the_marker_across_in_many_draws(planned_phantom, nnunet_env, monkeypatch):
    """The same measurement can fail: nnU-Net's default mirrors and rotates by up to 180 degrees."""
    augmentation, columns = marker_columns(nnUNetTrainerBudget, planned_phantom, nnunet_env, monkeypatch)
    assert augmentation["mirror_axes"] == [0, 1] and augmentation["tta_mirror_axes"] == [0, 1]
    assert sum(c > 0 for c in columns) > 0.25 * len(columns)
