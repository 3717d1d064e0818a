"""The pool checks' parts on small arrays: body mask, figures, refusal rule, HU window."""
from __future__ import annotations

import numpy as np
import pytest
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.errors import UserFacingError
from nnunet_diffusion_pretrain.pool.hu_window import HUWindow, hu_window
from nnunet_diffusion_pretrain.pool.pool_checks import (CLIPPED_MARGIN, LabelledReference, body_mask, likely_cause,
                                                   mismatch)

WINDOWED = {"0": {"min": 0.0, "max": 255.0, "mean": 141.7, "std": 19.3, "percentile_00_5": 60.2,
                  "percentile_99_5": 200.2}}
HU = {"0": {"min": -1024.0, "max": 3000.0, "mean": 90.0, "std": 60.0, "percentile_00_5": -90.0,
            "percentile_99_5": 300.0}}


def plans(properties: dict) -> PlansManager:
    return PlansManager({"foreground_intensity_properties_per_channel": properties})


def test_body_mask_ignores_padding_at_the_minimum_and_separates_air_from_tissue():
    image = np.full((4, 20, 20), -3024.0)  # scanner padding outside the reconstruction circle
    image[:, 2:18, 2:18] = -1000.0  # air
    image[:, 6:14, 6:14] = 40.0  # tissue
    mask = body_mask(image)
    assert mask.sum() == 4 * 8 * 8 and mask[:, 6:14, 6:14].all()


def test_a_scan_clipped_beyond_the_labelled_range_is_refused_and_one_inside_is_taken():
    reference = LabelledReference.from_figures([[{"clipped": 0.05, "median_z": -1.0, "percentiles_z": [-3, -1, 3]}],
                                                [{"clipped": 0.09, "median_z": 0.1, "percentiles_z": [-2, 0.1, 3]}]])
    assert reference.channels[0]["clipped"] == [0.05, 0.09]
    flat = mismatch([{"clipped": 0.09 + CLIPPED_MARGIN + 0.01, "median_z": 0.0}], reference)
    assert flat and "clipped flat" in flat and "labelled cases: 5%-9%" in flat
    assert mismatch([{"clipped": 0.12, "median_z": -2.2}], reference) is None  # windowed non-contrast CT
    shifted = mismatch([{"clipped": 0.05, "median_z": 3.5}], reference)
    assert shifted and "median intensity is +3.50" in shifted

def test_z_scored_datasets_hold_the_body_spread_to_the_labelled_range_instead_of_clipping():
    """Figures as measured on ../shared/data: CHAOS MR volumes under per-image z-scoring (median
    1.0-2.2, 95th percentile 3.5-4.4) and a raw-HU CT scan under the same scheme (median 0.72, in
    range; 95th percentile 1.03, far below)."""
    mr = LabelledReference.from_figures([[{"clipped": None, "median_z": 0.97, "percentiles_z": [0.49, 0.97, 3.52]}],
                                         [{"clipped": None, "median_z": 2.24, "percentiles_z": [1.11, 2.24, 4.35]}]])
    assert mr.channels[0]["clipped"] is None
    assert mismatch([{"clipped": None, "median_z": 1.4, "percentiles_z": [0.7, 1.4, 3.9]}], mr) is None
    ct = mismatch([{"clipped": None, "median_z": 0.72, "percentiles_z": [0.49, 0.72, 1.03]}], mr)
    assert ct and "95th percentile is +1.03" in ct and "per-image normalisation" in ct


def test_likely_cause_names_the_window_for_hu_scans_in_a_windowed_dataset():
    assert "--window LO HI" in likely_cause(np.array([-1000.0, 50.0]), plans(WINDOWED), None)
    assert "check --window" in likely_cause(np.array([0.0, 50.0]), plans(WINDOWED), HUWindow(-125, 275, 0, 255))
    assert "another modality" in likely_cause(np.array([-1000.0, 50.0]), plans(HU), None)


def test_hu_window_maps_onto_the_labelled_range_and_refuses_what_it_cannot_know():
    window = hu_window(-125, 275, None, plans(WINDOWED))
    assert window == HUWindow(-125.0, 275.0, 0.0, 255.0)
    np.testing.assert_allclose(window.apply(np.array([-1000.0, -125.0, 75.0, 275.0, 2000.0])),
                               [0.0, 0.0, 127.5, 255.0, 255.0])
    with pytest.raises(UserFacingError, match="--window-output"):
        hu_window(-125, 275, None, plans(HU))
    assert hu_window(-125, 275, (0.0, 1.0), plans(HU)).out_high == 1.0
    with pytest.raises(UserFacingError, match="upper bound"):
        hu_window(275, -125, None, plans(WINDOWED))
