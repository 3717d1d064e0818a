"""Bring Hounsfield-unit scans into a windowed dataset's representation before preprocessing.

Some public CT sets ship windowed (e.g. abdomen_ct_btcv6: HU [-125, 275] mapped to 0..255). Raw-HU
scans added to such a dataset's pool must get the same transform first, or the dataset's CT
normalisation clips them flat (``pool_checks``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from nnunet_diffusion_pretrain.errors import UserFacingError


@dataclass(frozen=True)
class HUWindow:
    low: float
    high: float
    out_low: float
    out_high: float

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Clip to [low, high], then map linearly onto [out_low, out_high] (float32)."""
        scaled = (np.clip(data.astype(np.float32), self.low, self.high) - self.low) / (self.high - self.low)
        return (self.out_low + scaled * (self.out_high - self.out_low)).astype(np.float32)

    def to_dict(self) -> dict:
        return asdict(self)


def stored_range(plans_manager: PlansManager) -> tuple[float, float]:
    """The lowest and highest foreground intensity of the labelled data (the fingerprint's)."""
    stats = plans_manager.foreground_intensity_properties_per_channel.values()
    return min(s["min"] for s in stats), max(s["max"] for s in stats)


def hu_window(low: float, high: float, output: tuple[float, float] | None, plans_manager: PlansManager) -> HUWindow:
    """The window; without ``output``, 0..255 when the labelled data lies in that range."""
    if not high > low:
        raise UserFacingError(f"--window {low:g} {high:g}: the upper bound must be above the lower")
    if output is None:
        lowest, highest = stored_range(plans_manager)
        if not (lowest >= 0 and highest <= 255):
            raise UserFacingError(f"the labelled data spans {lowest:g}..{highest:g}, not 0..255; give the range "
                                  f"they are stored in with --window-output LO HI")
        output = (0.0, 255.0)
    if not output[1] > output[0]:
        raise UserFacingError(f"--window-output {output[0]:g} {output[1]:g}: the upper bound must be above the lower")
    return HUWindow(float(low), float(high), float(output[0]), float(output[1]))
