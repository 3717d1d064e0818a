"""Labels with a side (left/right kidney), and the augmentation that keeps sides apart.

nnU-Net's default 2D augmentation mirrors both axes and rotates up to +-180 degrees, and its
inference mirrors too: the network learns that left and right are interchangeable, which costs
the organ of one side (on BTCV the right kidney lags the left in every arm). Where labels have
sides, the ``_keepSides`` trainers train without mirroring, rotate in-plane at most 15 degrees
(as pretraining does) and predict without mirroring.
"""
from __future__ import annotations

import re

import numpy as np

from nnunet_diffusion_pretrain.diffusion.pretraining_data import ROTATION

SIDE_WORDS = frozenset({"left", "right", "l", "r", "lt", "rt", "links", "rechts", "sinister", "dexter"})
KEEP_SIDES_ROTATION = ROTATION  # +-15 degrees in-plane, the pretraining's own augmentation
KEEP_SIDES_SUFFIX = "_keepSides"
METHOD_SETTINGS_FILE = "method_settings.json"  # a segmentation run's augmentation and transfer timestep


def _words(name: str) -> list[str]:
    """``kidney_left``, ``Kidney (L)``, ``leftKidney``, ``rt-adrenal`` -> lower-case words."""
    spaced = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name)
    return [w.lower() for w in re.split(r"[^A-Za-z0-9]+", spaced) if w]


def sided_labels(dataset_json: dict) -> list[str]:
    """Names of the dataset.json labels that say a side, in their usual spellings."""
    return [name for name in dataset_json.get("labels", {}) if SIDE_WORDS.intersection(_words(name))]


def augmentation_summary(rotation: tuple[float, float] | None, mirror_axes, tta_mirror_axes) -> dict:
    """What a trainer's augmentation does, in degrees and axes, for logs and results.json."""
    return {"rotation_degrees": [round(float(np.degrees(r)), 1) for r in rotation] if rotation else None,
            "mirror_axes": list(mirror_axes) if mirror_axes else [],
            "tta_mirror_axes": list(tta_mirror_axes) if tta_mirror_axes else []}
