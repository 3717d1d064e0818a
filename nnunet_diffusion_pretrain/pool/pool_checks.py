"""Does an unlabeled scan look, after the dataset's own normalisation, like the labelled cases?

The pretraining pool only helps if its images share the labelled images' representation. A raw-HU
scan added to a dataset stored windowed to 0..255 passes every read check, yet nnU-Net's CT
normalisation of that dataset clips almost all of its body to the two fingerprint bounds: the
model would learn flat slices. Two figures per channel catch this, each measured on the body
voxels (brighter than the image's Otsu threshold, taken above its minimum so that scanner padding
and windowed-out air do not count as a tissue class) after the dataset's normalisation:

- ``clipped``: the fraction of body voxels at either clip bound (CT normalisation only; per-image
  schemes such as MR z-scoring do not clip);
- ``median_z``: the body voxels' median in normalised units (every scheme); their 5th and 95th
  percentiles are recorded beside it (``percentiles_z``); the 95th counts for per-image schemes only.

A scan is refused when its clipped fraction exceeds the labelled cases' highest by more than
``CLIPPED_MARGIN``, or its median lies more than ``MEDIAN_MARGIN`` normalised units outside the
labelled cases' range. Measured on ../shared/data (abdomen_ct_btcv6 as the labelled dataset):
labelled cases 5-9 % clipped, body median -1.05 to +0.11 (contrast-enhanced); raw-HU scans 89-94 %
clipped, median -4.2 (the lower bound); the same scans windowed to [-125, 275] HU 3-12 % clipped,
median -2.2 to -1.6 (non-contrast, so darker organs: the median margin leaves room for that).

Per-image schemes (MR z-scoring) clip nothing and centre every image, so there the body's 95th
percentile (its spread) is held to the labelled range too (``UPPER_MARGIN``): on ../shared/data,
CHAOS MR volumes 3.5 to 4.4, raw-HU CT scans under the same scheme 1.0 to 1.2.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from skimage.filters import threshold_otsu

from nnunet_diffusion_pretrain.pool.hu_window import HUWindow, stored_range
from nnunet_diffusion_pretrain.pool.intensity_mapping import dataset_normalization

CLIPPED_MARGIN = 0.25
MEDIAN_MARGIN = 2.0
UPPER_MARGIN = 2.0  # 95th percentile, per-image schemes only
CLIPPING_SCHEME = "CTNormalization"
_OTSU_SAMPLE = 2_000_000  # voxels; the threshold of a large scan from an even subsample


def body_mask(image: np.ndarray) -> np.ndarray:
    """Voxels above the image's Otsu threshold, computed over the voxels above its minimum."""
    above = image[image > image.min()]
    if above.size == 0:
        return np.zeros(image.shape, dtype=bool)
    sample = above[:: max(1, above.size // _OTSU_SAMPLE)]
    return image > threshold_otsu(sample) if np.ptp(sample) > 0 else image >= sample[0]


def intensity_figures(data: np.ndarray, plans_manager: PlansManager, configuration_manager: ConfigurationManager
                      ) -> list[dict]:
    """Per channel of ``data`` (c, z, y, x), in the dataset's stored units: ``clipped`` (None where
    the scheme does not clip), ``median_z`` and ``percentiles_z`` (5th, 50th, 95th)."""
    figures = []
    properties = plans_manager.foreground_intensity_properties_per_channel
    for c, scheme in enumerate(configuration_manager.normalization_schemes):
        image = np.asarray(data[c], dtype=np.float32)
        body = body_mask(image)
        if not body.any():
            body = np.ones(image.shape, dtype=bool)
        p = properties.get(str(c), {})
        normalised = dataset_normalization(scheme, configuration_manager.use_mask_for_norm[c], p).run(
            image.copy(), np.zeros(image.shape, dtype=np.int8))[body]
        clipped = None
        if scheme == CLIPPING_SCHEME:
            std = max(p["std"], 1e-8)
            low, high = (p["percentile_00_5"] - p["mean"]) / std, (p["percentile_99_5"] - p["mean"]) / std
            tol = 1e-4 * max(1.0, high - low)
            clipped = float(np.mean((normalised <= low + tol) | (normalised >= high - tol)))
        percentiles = [float(v) for v in np.percentile(normalised, [5, 50, 95])]
        figures.append({"clipped": clipped, "median_z": percentiles[1], "percentiles_z": percentiles})
    return figures


@dataclass(frozen=True)
class LabelledReference:
    """The labelled cases' figures: per channel, [lowest, highest] of each, over ``num_cases``."""
    channels: list[dict]
    num_cases: int

    @classmethod
    def from_figures(cls, per_case: list[list[dict]]) -> "LabelledReference":
        channels = []
        for c in range(len(per_case[0])):
            values = [case[c] for case in per_case]
            clipped = [v["clipped"] for v in values if v["clipped"] is not None]
            channels.append({"clipped": [min(clipped), max(clipped)] if clipped else None,
                             "median_z": [min(v["median_z"] for v in values), max(v["median_z"] for v in values)],
                             "percentiles_z": [[min(v["percentiles_z"][i] for v in values),
                                                max(v["percentiles_z"][i] for v in values)] for i in range(3)]})
        return cls(channels, len(per_case))

    def to_dict(self) -> dict:
        return {"channels": self.channels, "num_cases": self.num_cases}

    @classmethod
    def from_dict(cls, stored: dict) -> "LabelledReference":
        return cls(stored["channels"], stored["num_cases"])


def mismatch(figures: list[dict], reference: LabelledReference) -> str | None:
    """What makes a scan unlike the labelled cases, in words, or None when it is alike."""
    for c, (scan, ref) in enumerate(zip(figures, reference.channels)):
        channel = f" (channel {c})" if len(figures) > 1 else ""
        if scan["clipped"] is not None and ref["clipped"] is not None \
                and scan["clipped"] > ref["clipped"][1] + CLIPPED_MARGIN:
            return (f"{scan['clipped']:.0%} of its body voxels{channel} are clipped flat by the dataset's CT "
                    f"normalisation (labelled cases: {ref['clipped'][0]:.0%}-{ref['clipped'][1]:.0%})")
        low, high = ref["median_z"]
        if not low - MEDIAN_MARGIN <= scan["median_z"] <= high + MEDIAN_MARGIN:
            return (f"its body's median intensity{channel} is {scan['median_z']:+.2f} after the dataset's "
                    f"normalisation (labelled cases: {low:+.2f} to {high:+.2f})")
        if ref["clipped"] is None and ref.get("percentiles_z") and scan.get("percentiles_z"):
            (low, high), upper = ref["percentiles_z"][2], scan["percentiles_z"][2]
            if not low - UPPER_MARGIN <= upper <= high + UPPER_MARGIN:
                return (f"its body's 95th percentile{channel} is {upper:+.2f} after the dataset's per-image "
                        f"normalisation (labelled cases: {low:+.2f} to {high:+.2f})")
    return None


def likely_cause(data: np.ndarray, plans_manager: PlansManager, window: HUWindow | None) -> str:
    """The probable reason a scan is unlike the labelled cases, and what to do about it."""
    lowest, highest = stored_range(plans_manager)
    if window is None and lowest >= 0 and highest <= 255 and float(data.min()) < -500:
        return ("likely a scan in Hounsfield units while the labelled data is stored windowed to 0..255: convert "
                "it with --window LO HI, the window the labelled data was made with (e.g. --window -125 275)")
    if window is not None:
        return "likely another window than the one the labelled data was made with: check --window"
    return "likely another modality, unit or window than the labelled cases"
